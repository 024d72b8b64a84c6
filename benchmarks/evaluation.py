"""Evaluation throughput: environment steps per second for 1-16 seeds x 10 episodes on Hopper-v5.

  python benchmarks/evaluation.py            # full: 10 episodes of 1000 steps per seed
  python benchmarks/evaluation.py --quick    # about a minute: 5 episodes of 50 steps per seed

Compares one gymnasium vector env of seeds x episodes copies (sync, and async
with one process per copy) against one env at a time (a plain loop over
episodes, one policy call per step). The policy is the paper's 3 x 512 network
at random initialisation, acting deterministically. Hopper is registered here
without its unhealthy-state termination, so every episode runs to the time
limit and every method simulates the same number of steps. A timing covers a
whole evaluation, env construction and resets included, after one warm-up call
that compiles the policy. Results go to benchmarks/results/evaluation_<platform>_nproc<N>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from bracplus_jax import evaluation, networks

ENV_ID = "HopperToTimeLimit-v5"
OBS_DIM, ACT_DIM = 11, 3
SEED_COUNTS = (1, 2, 4, 8, 16)

# At module level so async workers, which import this file, know the id too.
gym.register(ENV_ID, entry_point="gymnasium.envs.mujoco.hopper_v5:HopperEnv",
             kwargs={"terminate_when_unhealthy": False}, max_episode_steps=1000)


def policy_params(policy: networks.TanhGaussianPolicy, num_seeds: int):
  init = jax.vmap(lambda key: policy.init(key, jnp.zeros((1, OBS_DIM))))
  return jax.jit(init)(jax.random.split(jax.random.key(0), num_seeds))


def one_env_at_a_time(policy, params, episodes: int, max_episode_steps: int, seed: int) -> int:
  """Every seed's episodes in turn in one env, one policy call per step; returns the steps taken."""
  act = jax.jit(lambda seed_params, observation: jnp.tanh(policy.apply(seed_params, observation)[0]))
  num_seeds = jax.tree.leaves(params)[0].shape[0]
  env = gym.make(ENV_ID, max_episode_steps=max_episode_steps)
  steps = 0
  for seed_index in range(num_seeds):
    seed_params = jax.tree.map(lambda x: x[seed_index], params)
    for episode in range(episodes):
      observation, _ = env.reset(seed=seed + seed_index * episodes + episode)
      done = False
      while not done:
        action = np.asarray(act(seed_params, np.asarray(observation, np.float32)))
        observation, _, terminated, truncated, _ = env.step(action)
        steps, done = steps + 1, terminated or truncated
  env.close()
  return steps


def vector_env(vectorization: str):
  def run(policy, params, episodes: int, max_episode_steps: int, seed: int) -> int:
    result = evaluation.evaluate_episodes(policy, params, ENV_ID, episodes, seed,
                                          max_episode_steps=max_episode_steps,
                                          vectorization=vectorization)
    return int(result.lengths.sum())
  return run


METHODS = {"sync": vector_env("sync"), "async": vector_env("async"), "one_env": one_env_at_a_time}


def measure(method, policy, params, episodes, max_episode_steps, repeats) -> dict:
  method(policy, params, episodes, max_episode_steps, seed=0)  # compiles the policy call
  seconds = []
  for repeat in range(repeats):
    start = time.perf_counter()
    steps = method(policy, params, episodes, max_episode_steps, seed=repeat)
    seconds.append(time.perf_counter() - start)
  median = statistics.median(seconds)
  return {"steps": steps, "seconds": seconds, "median_seconds": median, "steps_per_second": steps / median}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="5 episodes of 50 steps per seed")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--methods", default="sync,async,one_env")
  parser.add_argument("--async_max_seeds", type=int, default=None,
                      help="skip async above this many seeds (default: 2 with --quick, else all)")
  args = parser.parse_args()
  episodes, max_episode_steps = (5, 50) if args.quick else (10, 1000)
  async_max_seeds = args.async_max_seeds or (2 if args.quick else max(SEED_COUNTS))
  # Async workers start from a server that has these imported, not from a fresh interpreter.
  multiprocessing.set_forkserver_preload(["gymnasium", "jax", "bracplus_jax.evaluation"])

  platform = jax.devices()[0].platform
  nproc = os.cpu_count()
  load_before = os.getloadavg()
  policy = networks.TanhGaussianPolicy(ACT_DIM)
  rows = []
  print(f"{ENV_ID} (Hopper-v5 without early termination), {episodes} episodes x {max_episode_steps} "
        f"steps per seed, {platform}, {nproc} cores, median of {args.repeats}")
  print(f"{'seeds':>5} {'envs':>5} {'method':>8} {'steps':>7} {'median s':>9} {'steps/s':>9} "
        f"{'vs one_env':>10}")
  for num_seeds in SEED_COUNTS:
    params = policy_params(policy, num_seeds)
    by_method = {}
    for name in args.methods.split(","):
      if name == "async" and num_seeds > async_max_seeds:
        continue
      by_method[name] = measure(METHODS[name], policy, params, episodes, max_episode_steps, args.repeats)
    baseline = by_method.get("one_env", {}).get("steps_per_second")
    for name, result in by_method.items():
      speedup = result["steps_per_second"] / baseline if baseline else float("nan")
      row = {"seeds": num_seeds, "episodes": episodes, "envs": num_seeds * episodes, "method": name,
             **result, "speedup_vs_one_env": speedup}
      rows.append(row)
      print(f"{num_seeds:>5} {row['envs']:>5} {name:>8} {result['steps']:>7} "
            f"{result['median_seconds']:>9.2f} {result['steps_per_second']:>9.0f} {speedup:>9.2f}x",
            flush=True)

  record = {
      "benchmark": "evaluation", "env_id": "Hopper-v5 (terminate_when_unhealthy=False)",
      "episodes_per_seed": episodes, "max_episode_steps": max_episode_steps, "quick": args.quick,
      "repeats": args.repeats, "policy_hidden_dims": list(policy.hidden_dims), "mode": "deterministic",
      "platform": platform, "nproc": nproc, "load_average_before": load_before,
      "load_average_after": os.getloadavg(), "jax": jax.__version__, "gymnasium": gym.__version__,
      "results": rows,
  }
  out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"evaluation_{platform}_nproc{nproc}.json")
  with open(path, "w") as file:
    json.dump(record, file, indent=2)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
