"""bracplus evaluate <run dir>: evaluate a saved run's policies again.

  bracplus evaluate runs/hopper_mixed-20261125 [--episodes=10] [--mode=best_of_q]
      [--video=episode.mp4]

Restores the run's last checkpoint, runs every seed's policy in the run's
environment and prints return and normalised score per seed. With --video the
first seed's first episode is also rendered (headless machines need
MUJOCO_GL=egl or osmesa).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
import ml_collections
import numpy as np

from bracplus_jax import checkpoints, data, envs, evaluation, sweep, train
from bracplus_jax.cli import exits_cleanly_on_input_errors, run_command
from bracplus_jax.errors import InputError

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer("episodes", None, "Episodes per seed (default: the run's eval_episodes).")
  flags.DEFINE_enum("mode", None, ["deterministic", "best_of_q"],
                    "How actions are chosen (default: the run's eval_mode).")
  flags.DEFINE_integer("seed", 0, "Seed of the evaluation episodes.")
  flags.DEFINE_string("video", None, "Also render the first seed's first episode to this file.")


def restore_run(run_dir: str):
  """(config, algorithm, state) of a run directory's last checkpoint."""
  config_path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(config_path):
    raise InputError(f"{run_dir}: not a run directory (no config.json)")
  with open(config_path) as file:
    config = ml_collections.ConfigDict(json.load(file))
  checkpointer = checkpoints.Checkpointer(os.path.join(run_dir, "checkpoints"))
  observation_space, action_space = envs.spaces(config.env)
  observation_dim, action_dim = observation_space.shape[0], action_space.shape[0]
  latest = checkpointer.latest()
  # alpha(s)'s row offsets (alpha_dual_gain "rows") have one entry per dataset row [seeds, N].
  rows = None if latest is None else checkpointer.saved_shape(latest, "alpha", "params", "rows", "log_alpha")
  algorithm = train.make_algorithm(config, observation_dim, action_dim,
                                   dataset_size=rows[-1] if rows else None)
  restored = checkpointer.restore_latest(lambda units: train.state_template(algorithm, config, units))
  checkpointer.close()
  if restored is None:
    raise InputError(f"{run_dir}: has no checkpoint yet")
  state = restored[0]
  return config, algorithm, state


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    sys.exit(2)
  config, algorithm, state = restore_run(argv[1])
  episodes = FLAGS.episodes or config.eval_episodes or 10
  returns = evaluation.evaluate(
      algorithm.policy, state.policy.params, config.env, episodes, FLAGS.seed,
      mode=FLAGS.mode or config.eval_mode, critic=algorithm.critic,
      critic_params=state.critic.params, video_path=FLAGS.video)
  reference = data.reference_returns(config.dataset, config.env)
  seed_returns = returns.mean(axis=1)
  for index, value in enumerate(seed_returns):
    line = f"{sweep.run_name(config, index)}: return {value:.1f}"
    if reference is not None:
      line += f", normalised score {float(data.scores.normalized_score(value, *reference[:2])):.1f}"
    print(line)
  line = f"mean +- std over {'all runs' if sweep.is_sweep(config) else 'seeds'}: return {seed_returns.mean():.1f} +- {seed_returns.std():.1f}"
  if reference is not None:
    normalized = data.scores.normalized_score(seed_returns, *reference[:2])
    line += f", normalised score {np.mean(normalized):.1f} +- {np.std(normalized):.1f}"
  print(line)


if __name__ == "__main__":
  run_command(sys.modules[__name__])
