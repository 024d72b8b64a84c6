"""bracplus train --config=<config> [--workdir=DIR]: trains BRAC+ (or BC) from a config.

  bracplus train --config=hopper_local                 # random Hopper data made here, minutes on a CPU
  bracplus train --config=hopper_local:mixed           # D4RL's medium-replay recipe, made here
  bracplus train --config=hopper_mixed                 # the paper's settings on D4RL's file (a GPU)
  bracplus train --config=my_task.py --workdir=runs/mine

--config is a packaged config by name (bracplus_jax/configs/: hopper_local, hopper_mixed,
walker2d_medium, pen_human, evidence, ...; `name:argument` passes the argument to its
get_config) or the path to a config file of your own. Any config field can be set on the
command line, e.g. --config.num_seeds=4 --config.dataset=hdf5:/data/hopper.hdf5
--config.algo.divergence=mmd. `--config.sweep.algo.kl_margin="(0.5,1,3)"` trains every value
(and every seed) in one compiled program. `--resume --workdir=DIR` continues a stopped run
from its last checkpoint, inside a phase if it stopped there, with the config it started with.
`python launch.py` in a clone is the same command.
"""

from __future__ import annotations

import os
import time

from absl import flags

from bracplus_jax.cli import define_config_flag, exits_cleanly_on_input_errors, refuse_arguments
from bracplus_jax.errors import InputError

# What --config's errors suggest (`bracplus_jax.cli.run_command`).
CONFIG_EXAMPLE = "hopper_local"


def define_flags() -> None:
  """Only when run as a program: other commands define flags of the same names."""
  define_config_flag(None, "A packaged config's name (hopper_local, hopper_local:mixed, "
                     "hopper_mixed, ...) or the path to a config file with get_config().")
  flags.DEFINE_string(
      "workdir", None, "The run directory (default runs/<name>-<time>); an existing one is never "
      "overwritten: the run gets a fresh name instead.")
  flags.DEFINE_bool("resume", False, "Continue the stopped run in --workdir.")
  flags.DEFINE_bool(
      "distributed", False, "Call jax.distributed.initialize() first: one process per host, "
      "coordinator and process ids from the cluster's environment (SLURM, TPU pods, or the "
      "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables).")


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  from bracplus_jax import experiment
  options = flags.FLAGS
  refuse_arguments(argv)
  if options.resume and not options.workdir:
    raise InputError("--resume needs --workdir=<the run directory to continue>")
  if options.distributed:
    import jax
    jax.distributed.initialize()
  config = options.config if options["config"].present else None
  if config is None and not options.resume:
    raise InputError(f"--config: missing; expected a packaged config such as --config={CONFIG_EXAMPLE} "
                     "or the path to a config file of your own")
  workdir = options.workdir or os.path.join("runs", f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
  experiment.run(config, workdir, resume=options.resume)
