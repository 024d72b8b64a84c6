"""The start-up phases under both start-up learning-rate schedules: how well they end.

  python benchmarks/startup_schedule.py --recipes=mixed,medium [--seeds=2]

Runs only the behaviour model, H0, the initial policy and eps_KL of
bracplus_jax/configs/hopper_local.py:<recipe> (4,000 behaviour and 1,500 initial-policy
steps) with `algo.startup_lr_schedule` = constant and = released, and prints
and writes (benchmarks/results/startup_schedule.json) per seed: the behaviour
model's NLL bound, the initial policy's KL and entropy, eps_KL, and the mean
decoder std at z ~ N(0, I) over 4,096 dataset states. The datasets must exist
(bracplus collect --recipe=all).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bracplus_jax import data, networks, train  # noqa: E402
from bracplus_jax.configs import hopper_local  # noqa: E402

REPORTED = ("behavior/behavior_nll_bound", "policy_init/kl", "policy_init/policy_entropy",
            "kl_threshold/kl_threshold")


def probe(recipe: str, schedule: str, num_seeds: int) -> dict:
  config = hopper_local.get_config(recipe)
  config.num_seeds = num_seeds
  config.algo.startup_lr_schedule = schedule
  dataset = data.load_dataset(config.dataset, env_id=config.env, progress=False)
  trainer = train.Trainer(config, dataset, progress=False)
  state, keys = trainer.initial()
  row, began = {}, time.perf_counter()
  for unit in range(train.STAGES.index("kl_threshold") + 1):
    state, keys, result = trainer.run_unit(unit, state, keys)
    for name, value in result.metrics.items():
      row[f"{result.name}/{name}"] = [float(v) for v in np.ravel(value)]
  observations = dataset.transitions.observations[:4096]
  behavior = trainer.algorithm.behavior

  def decoder_std(params, key):
    latents = jax.random.normal(key, (observations.shape[0], behavior.latent_dim))
    _, std = behavior.member().apply(networks.member_variables(params, 0), observations, latents,
                                     method="decode")
    return std.mean()

  row["decoder_std"] = [float(v) for v in jax.vmap(decoder_std, in_axes=(0, None))(
      state.behavior.params, jax.random.key(0))]
  row["seconds"] = round(time.perf_counter() - began, 1)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipes", default="mixed,medium")
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "startup_schedule.json"))
  args = parser.parse_args()
  results = {}
  print("recipe  schedule  " + "  ".join(REPORTED) + "  decoder_std")
  for recipe in args.recipes.split(","):
    for schedule in ("constant", "released"):
      row = results[f"{recipe}/{schedule}"] = probe(recipe, schedule, args.seeds)
      cells = ["/".join(f"{v:.3f}" for v in row[name]) for name in REPORTED + ("decoder_std",)]
      print(f"{recipe}  {schedule}  " + "  ".join(cells), flush=True)
  with open(args.out, "w") as file:
    json.dump(results, file, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
