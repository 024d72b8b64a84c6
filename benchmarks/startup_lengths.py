"""How long each start-up phase needs: its figure after every block of steps, until it flattens.

  python benchmarks/startup_lengths.py --recipes=medium,mixed [--seeds=2]
      [--behavior_steps=20000] [--policy_init_steps=5000] [--critic_init_steps=60000]

Runs the start-up phases of bracplus_jax/configs/hopper_local.py:<recipe> at the given
lengths and records, every `--block` steps and per seed: the behaviour model's
NLL bound, the initial policy's KL, and the initial critic's fit to the data's
discounted Monte-Carlo returns (correlation and mean error, `train.critic_check`).
Prints the curves and writes them (benchmarks/results/startup_lengths.json) with
the data file's checksum. The datasets must exist (bracplus collect
--recipe=all).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from bracplus_jax import data, train  # noqa: E402
from bracplus_jax.configs import hopper_local  # noqa: E402

FIGURES = {"behavior": ("behavior_nll_bound",), "policy_init": ("kl",),
           "critic_init": ("q_mc_correlation", "q_mc_mean_error")}


def curves(recipe: str, num_seeds: int, lengths: dict[str, int], block: int) -> dict:
  config = hopper_local.get_config(recipe)
  config.num_seeds = num_seeds
  config.block_steps = block
  config.behavior_steps, config.policy_init_steps, config.critic_init_steps = (
      lengths["behavior"], lengths["policy_init"], lengths["critic_init"])
  dataset = data.load_dataset(config.dataset, env_id=config.env, progress=False)
  trainer = train.Trainer(config, dataset, progress=False)
  state, keys = trainer.initial()
  found: dict = {}
  began = time.perf_counter()
  for unit in range(train.STAGES.index("critic_init") + 1):
    name = train.STAGES[unit]
    if name not in FIGURES:
      state, keys, _ = trainer.run_unit(unit, state, keys)
      continue
    done = 0
    while done < lengths[name]:  # one block at a time, so each block's figures are kept
      steps = min(block, lengths[name] - done)
      state, keys, metrics = trainer.run_steps(name, state, keys, steps, name)
      done += steps
      if name == "critic_init":
        metrics = trainer.critic_fit_metrics(state)
      for figure in FIGURES[name]:
        found.setdefault(f"{name}/{figure}", []).append(
            [done] + [round(float(v), 4) for v in np.ravel(metrics[figure])])
  found["seconds"] = round(time.perf_counter() - began, 1)
  found["dataset"] = config.dataset
  found["dataset_checksum"] = dataset.checksum
  return found


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipes", default="medium,mixed")
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--behavior_steps", type=int, default=20_000)
  parser.add_argument("--policy_init_steps", type=int, default=5_000)
  parser.add_argument("--critic_init_steps", type=int, default=60_000)
  parser.add_argument("--block", type=int, default=2_500)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "startup_lengths.json"))
  args = parser.parse_args()
  lengths = {"behavior": args.behavior_steps, "policy_init": args.policy_init_steps,
             "critic_init": args.critic_init_steps}
  results = {}
  for recipe in args.recipes.split(","):
    results[recipe] = curves(recipe, args.seeds, lengths, args.block)
    for figure, rows in results[recipe].items():
      if isinstance(rows, list):
        print(f"{recipe} {figure}: " + ", ".join(f"{row[0]}: " + "/".join(f"{v:g}" for v in row[1:])
                                                 for row in rows), flush=True)
  with open(args.out, "w") as file:
    json.dump({"command": " ".join(sys.argv), "lengths": lengths, "results": results}, file, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
