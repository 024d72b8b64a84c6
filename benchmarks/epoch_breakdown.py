"""Where an RL epoch's time goes: the updates against the dataset-wide pass after them.

  python benchmarks/epoch_breakdown.py [--recipe=mixed] [--seeds=1] [--repeats=5]

After every epoch BRAC+ recomputes eps_GP = mean + std of KL(s) over every
dataset state (Sec. 3.3), and the same pass gives the multiplier figures. This
times, at bracplus_jax/configs/hopper_local.py:<recipe>'s settings (its dataset must exist:
`bracplus collect --recipe=all`), one epoch's compiled update
blocks and the dataset pass separately, alternating, after one warm-up each,
and prints and writes (benchmarks/results/epoch_breakdown.json) their medians
and the pass's share of the epoch.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402

from bracplus_jax import data, train  # noqa: E402
from bracplus_jax.configs import hopper_local  # noqa: E402


def timed(function):
  began = time.perf_counter()
  jax.block_until_ready(function())
  return time.perf_counter() - began


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipe", default="mixed")
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "epoch_breakdown.json"))
  args = parser.parse_args(argv)

  config = hopper_local.get_config(args.recipe)
  config.num_seeds = args.seeds
  # The start-up phases only need to leave a state of the right structure behind.
  config.behavior_steps = config.policy_init_steps = config.critic_init_steps = 10
  dataset = data.load_dataset(config.dataset, env_id=config.env, progress=False)
  trainer = train.Trainer(config, dataset, progress=False)
  state, keys = trainer.initial()
  for unit in range(len(train.STAGES)):
    state, keys, _ = trainer.run_unit(unit, state, keys)
  observations = trainer.transitions.observations

  def updates():
    nonlocal state, keys
    state, keys, _ = trainer.run_steps("epoch", state, keys, config.steps_per_epoch, "")
    return state

  def dataset_pass():
    nonlocal state, keys
    keys, pass_keys = train._split(keys)
    state, metrics = trainer._gp_per_epoch(state, observations, pass_keys)
    return state, metrics

  timed(updates), timed(dataset_pass)  # compile and warm up
  update_s, pass_s = [], []
  for _ in range(args.repeats):
    update_s.append(timed(updates))
    pass_s.append(timed(dataset_pass))
  result = {
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "config": f"hopper_local:{args.recipe}", "seeds": args.seeds,
      "steps_per_epoch": config.steps_per_epoch, "batch_size": config.batch_size,
      "dataset_states": int(observations.shape[0]), "repeats": args.repeats,
      "update_seconds": update_s, "dataset_pass_seconds": pass_s,
      "update_median_s": statistics.median(update_s), "dataset_pass_median_s": statistics.median(pass_s),
      "dataset_pass_share": statistics.median(p / (u + p) for u, p in zip(update_s, pass_s)),
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                  "device": str(jax.devices()[0])},
  }
  print(f"{config.steps_per_epoch} updates: {result['update_median_s']:.2f} s, dataset pass over "
        f"{result['dataset_states']} states: {result['dataset_pass_median_s']:.2f} s "
        f"(median of {args.repeats}); the pass is {100 * result['dataset_pass_share']:.1f}% of an epoch")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as file:
    json.dump(result, file, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
