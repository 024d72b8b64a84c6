"""python -m bracplus_jax.collect: roll a policy out in a gymnasium MuJoCo env into a D4RL-format file.

  python -m bracplus_jax.collect --env=Hopper-v5 --policy=random --steps=100000 \
      --out=/tmp/hopper_random.hdf5 [--seed=0]

The file holds observations, actions, rewards, terminals, timeouts,
next_observations, infos/qpos, infos/qvel and metadata/*, and reads back with
`python -m bracplus_jax.data hdf5:<out>`. An existing file is never overwritten.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
from typing import Callable

from absl import app, flags
import gymnasium as gym
import h5py
import numpy as np
import tqdm

from bracplus_jax.cli import exits_cleanly_on_input_errors
from bracplus_jax.errors import InputError

Policy = Callable[[np.ndarray], np.ndarray]  # one observation -> one action in [-1, 1]


def random_policy(env: gym.Env, seed: int) -> Policy:
  """Uniform over the action box, as D4RL's random datasets."""
  rng = np.random.default_rng(seed)
  low, high = env.action_space.low, env.action_space.high
  return lambda observation: rng.uniform(low, high).astype(np.float32)


POLICIES = {"random": random_policy}


def make_env(env_id: str) -> gym.Env:
  try:
    env = gym.make(env_id)
  except gym.error.Error as error:
    raise InputError(f"--env: gymnasium does not know '{env_id}' ({error})") from error
  space = env.action_space
  if not isinstance(space, gym.spaces.Box) or space.low.min() < -1 or space.high.max() > 1:
    env.close()
    raise InputError(
        f"--env: {env_id} has action space {space}; expected a Box inside [-1, 1], "
        "which a tanh policy covers")
  return env


def rollout(env: gym.Env, policy: Policy, steps: int, seed: int, progress: bool = True) -> dict:
  """`steps` rows in D4RL's layout; the last, unfinished episode ends in a timeout."""
  rows = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts",
                              "next_observations", "infos/qpos", "infos/qvel")}
  mujoco_data = getattr(env.unwrapped, "data", None)
  observation, _ = env.reset(seed=seed)
  for step in tqdm.trange(steps, desc="collecting", unit="step", disable=not progress):
    if mujoco_data is not None:
      rows["infos/qpos"].append(mujoco_data.qpos.copy())
      rows["infos/qvel"].append(mujoco_data.qvel.copy())
    action = policy(observation)
    next_observation, reward, terminated, truncated, _ = env.step(action)
    truncated = truncated or (step == steps - 1 and not terminated)
    for key, value in (("observations", observation), ("actions", action),
                       ("rewards", reward), ("terminals", terminated),
                       ("timeouts", truncated), ("next_observations", next_observation)):
      rows[key].append(value)
    observation = env.reset()[0] if (terminated or truncated) else next_observation
  dtypes = {"terminals": bool, "timeouts": bool}
  return {key: np.asarray(values, dtype=dtypes.get(key, np.float32))
          for key, values in rows.items() if values}


def package_versions() -> dict[str, str]:
  versions = {}
  for package in ("bracplus-jax", "gymnasium", "mujoco", "numpy", "jax"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = "not installed"
  return versions


def write_dataset(path: str, arrays: dict, metadata: dict) -> None:
  """Writes to a temporary name beside `path`, renamed only once complete; never overwrites."""
  if os.path.exists(path):
    raise InputError(f"--out: {path} exists; it is never overwritten, choose another path")
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:
    raise InputError(f"--out: cannot create the folder {directory} ({error.strerror})") from error
  partial = f"{path}.part-{os.getpid()}"
  try:
    with h5py.File(partial, "w") as file:
      for key, value in arrays.items():
        file.create_dataset(key, data=value, compression="gzip", compression_opts=1)
      for key, value in metadata.items():
        file[f"metadata/{key}"] = value
    if os.path.exists(path):
      raise InputError(f"--out: {path} appeared while collecting; it is left as it was")
    os.replace(partial, path)
  except OSError as error:
    raise InputError(f"--out: cannot write {path} ({error})") from error
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def collect(env_id: str, policy_name: str, steps: int, out: str, seed: int = 0,
            progress: bool = True) -> dict:
  """Checks every argument, rolls the policy out and writes the file; returns its arrays."""
  if policy_name not in POLICIES:
    raise InputError(f"--policy: unknown policy '{policy_name}'; known: {', '.join(POLICIES)}")
  if steps < 1:
    raise InputError(f"--steps: {steps}; expected a positive number of environment steps")
  if os.path.exists(out):
    raise InputError(f"--out: {out} exists; it is never overwritten, choose another path")
  env = make_env(env_id)
  try:
    arrays = rollout(env, POLICIES[policy_name](env, seed), steps, seed, progress)
  finally:
    env.close()
  metadata = {
      "env_id": env_id, "policy": policy_name, "seed": seed, "steps": steps,
      "episodes": int((arrays["terminals"] | arrays["timeouts"]).sum()),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      **{f"versions/{name}": version for name, version in package_versions().items()},
  }
  write_dataset(out, arrays, metadata)
  return arrays


_ENV = flags.DEFINE_string("env", "Hopper-v5", "A gymnasium MuJoCo environment id.")
_POLICY = flags.DEFINE_string("policy", "random", f"The behaviour policy: {', '.join(POLICIES)}.")
_STEPS = flags.DEFINE_integer("steps", 100_000, "Environment steps to record.")
_OUT = flags.DEFINE_string("out", None, "The HDF5 file to write; must not exist yet.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the environment and the policy.")


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise InputError(f"unexpected arguments {argv[1:]}; every option is a --flag")
  if not _OUT.value:
    raise InputError("--out: missing; expected the path of the HDF5 file to write")
  arrays = collect(_ENV.value, _POLICY.value, _STEPS.value, _OUT.value, _SEED.value)
  episodes = int((arrays["terminals"] | arrays["timeouts"]).sum())
  print(f"wrote {_OUT.value}: {len(arrays['rewards'])} steps, {episodes} episodes; "
        f"inspect it with: python -m bracplus_jax.data hdf5:{_OUT.value}")


if __name__ == "__main__":
  app.run(main)
