"""Trains BRAC+ from a config file: python launch.py --config=configs/hopper_mixed.py [--workdir=DIR]

Any config field can be set on the command line, e.g. --config.num_seeds=4
--config.dataset=hdf5:/data/hopper.hdf5 --config.algo.divergence=mmd.
`--config.sweep.algo.kl_margin="(0.5,1,3)"` trains every value (and every seed) in one
compiled program. `--resume --workdir=DIR` continues a stopped run from its last checkpoint,
inside a phase if it stopped there.
"""

import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from bracplus_jax.cli import config_flags_parser, exits_cleanly_on_input_errors, refuse_arguments

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file with get_config(), e.g. configs/hopper_mixed.py.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The run directory (default runs/<name>-<time>); an existing one is never "
    "overwritten: the run gets a fresh name instead.")
_RESUME = flags.DEFINE_bool("resume", False, "Continue the stopped run in --workdir.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first: one process per host, "
    "coordinator and process ids from the cluster's environment (SLURM, TPU pods, or the "
    "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables).")


@exits_cleanly_on_input_errors
def main(argv):
  from bracplus_jax import experiment
  from bracplus_jax.errors import InputError
  refuse_arguments(argv)
  if _RESUME.value and not _WORKDIR.value:
    raise InputError("--resume needs --workdir=<the run directory to continue>")
  if _DISTRIBUTED.value:
    import jax
    jax.distributed.initialize()
  config = _CONFIG.value if flags.FLAGS["config"].present else None
  if config is None and not _RESUME.value:
    raise InputError("--config: missing; expected a config file such as configs/hopper_mixed.py")
  workdir = _WORKDIR.value or os.path.join("runs", f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
  experiment.run(config, workdir, resume=_RESUME.value)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # configs import configs.base
  app.run(main, flags_parser=config_flags_parser("configs/hopper_mixed.py"))
