"""bracplus data <spec>: what a dataset holds, before a long run is spent on it.

`python -m bracplus_jax.data <spec>` is the same command.
"""

from __future__ import annotations

import sys

from absl import flags
import numpy as np

from bracplus_jax import data
from bracplus_jax.cli import exits_cleanly_on_input_errors, run_command

# Defined on import (`bracplus data` imports this module to run it).
_CLIP_ACTIONS = flags.DEFINE_bool(
    "clip_actions", False, "Clip actions outside [-1, 1] instead of refusing the dataset.")
_ENV = flags.DEFINE_string(
    "env", None, "A gymnasium id whose observation and action sizes the data must match.")

USAGE = "usage: bracplus data [--env=ID] [--clip_actions] <spec>\n" + data.__doc__


def _stats(values: np.ndarray) -> str:
  return (f"mean {values.mean():.2f}  std {values.std():.2f}  "
          f"min {values.min():.2f}  max {values.max():.2f}")


def summary(dataset: data.OfflineDataset) -> str:
  transitions = dataset.transitions
  dones = np.asarray(transitions.dones)
  lines = [
      f"dataset            {dataset.spec}",
      f"environment        {dataset.env_id or 'unknown'}",
      f"transitions        {transitions.size}",
      f"episodes           {len(dataset.episode_returns)} "
      f"(length mean {dataset.episode_lengths.mean():.1f}, "
      f"min {dataset.episode_lengths.min()}, max {dataset.episode_lengths.max()})",
      f"observation dim    {transitions.observation_dim}",
      f"action dim         {transitions.action_dim}",
      f"return (raw)       {_stats(dataset.episode_returns)}",
  ]
  normalized = dataset.normalized_score(dataset.episode_returns)
  if normalized is not None:
    lines.append(f"return (normalised) {_stats(normalized)}  "
                 f"[random {dataset.ref_min_score:g}, expert {dataset.ref_max_score:g}: "
                 f"{dataset.reference_source}]")
  else:
    lines.append("return (normalised) n/a: no reference returns known for this dataset")
  low, high = dataset.raw_reward_range
  lines.append(f"reward range       [{low:.4g}, {high:.4g}]"
               + (" (scaled to [0, 1] for training)" if dataset.reward_scale else ""))
  lines.append(f"fraction terminal  {dones.mean():.4f} ({int(dones.sum())} transitions)")
  return "\n".join(lines)


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  if len(argv) != 2:
    print(USAGE, file=sys.stderr)
    sys.exit(2)
  dataset = data.load_dataset(argv[1], clip_actions=_CLIP_ACTIONS.value, env_id=_ENV.value)
  print(summary(dataset))


if __name__ == "__main__":
  run_command(sys.modules[__name__])
