"""The collector writes D4RL-format files that replay exactly in the simulator and read back."""

import os
import subprocess
import sys

import gymnasium as gym
import h5py
import numpy as np
import pytest

from bracplus_jax import data
from bracplus_jax.collection import collect
from bracplus_jax.errors import InputError


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("collect") / "hopper_random.hdf5")
  collect.collect("Hopper-v5", "random", 400, path, seed=3, progress=False)
  return path


def test_file_has_d4rl_keys_and_metadata(hopper_file):
  with h5py.File(hopper_file) as file:
    for key in ("observations", "actions", "rewards", "terminals", "timeouts",
                "next_observations", "infos/qpos", "infos/qvel"):
      assert len(file[key]) == 400, key
    assert file["observations"].shape == (400, 11) and file["infos/qpos"].shape == (400, 6)
    assert file["metadata/env_id"][()].decode() == "Hopper-v5"
    assert file["metadata/policy"][()].decode() == "random"
    assert file["metadata/seed"][()] == 3
    assert file["metadata/versions/gymnasium"][()].decode() == gym.__version__
    ends = file["terminals"][()] | file["timeouts"][()]
    assert ends[-1]  # the unfinished last episode is cut by a timeout
    assert file["metadata/episodes"][()] == ends.sum()


def test_rows_replay_in_the_simulator(hopper_file):
  """Setting the recorded qpos/qvel and taking the recorded action reproduces each row."""
  env = gym.make("Hopper-v5")
  env.reset(seed=0)
  with h5py.File(hopper_file) as file:
    rows = {key: file[key][()] for key in file if isinstance(file[key], h5py.Dataset)}
    qpos, qvel = file["infos/qpos"][()], file["infos/qvel"][()]
  for i in range(0, 400, 7):
    env.unwrapped.set_state(qpos[i], qvel[i])
    np.testing.assert_allclose(env.unwrapped._get_obs(), rows["observations"][i], atol=1e-5)
    next_observation, reward, terminated, _, _ = env.step(rows["actions"][i])
    np.testing.assert_allclose(next_observation, rows["next_observations"][i], atol=1e-5)
    assert reward == pytest.approx(rows["rewards"][i], abs=1e-5)
    assert terminated == rows["terminals"][i]
  env.close()


def test_episodes_chain_next_observations(hopper_file):
  with h5py.File(hopper_file) as file:
    observations, next_observations = file["observations"][()], file["next_observations"][()]
    ends = file["terminals"][()] | file["timeouts"][()]
  inside = np.flatnonzero(~ends[:-1])
  np.testing.assert_array_equal(next_observations[inside], observations[inside + 1])


def test_data_layer_reads_it_back(hopper_file):
  dataset = data.load_dataset(f"hdf5:{hopper_file}", env_id="Hopper-v5", progress=False)
  with h5py.File(hopper_file) as file:
    timeouts = file["timeouts"][()]
  assert dataset.transitions.size == 400 - timeouts.sum()
  assert dataset.env_id == "Hopper-v5" and dataset.has_reference_scores


def test_same_seed_same_data(tmp_path, hopper_file):
  again = str(tmp_path / "again.hdf5")
  collect.collect("Hopper-v5", "random", 400, again, seed=3, progress=False)
  with h5py.File(hopper_file) as a, h5py.File(again) as b:
    np.testing.assert_array_equal(a["actions"][()], b["actions"][()])
    np.testing.assert_array_equal(a["observations"][()], b["observations"][()])


def test_an_existing_file_is_never_overwritten(tmp_path):
  path = tmp_path / "precious.hdf5"
  path.write_bytes(b"keep me")
  with pytest.raises(InputError, match="exists"):
    collect.collect("Hopper-v5", "random", 10, str(path), progress=False)
  assert path.read_bytes() == b"keep me"


@pytest.mark.parametrize("args, fragment", [
    (["--env=Hopper-v5", "--steps=0"], "--steps"),
    (["--env=NoSuchEnv-v0", "--steps=5"], "NoSuchEnv-v0"),
    (["--env=Pendulum-v1", "--steps=5"], "[-1, 1]"),
    (["--env=Hopper-v5", "--policy=expert", "--steps=5"], "--policy"),
    (["--env=Hopper-v5", "--steps=5", "--out="], "--out"),
])
def test_bad_arguments_get_one_line(tmp_path, args, fragment):
  out = [] if any(a.startswith("--out") for a in args) else [f"--out={tmp_path / 'x.hdf5'}"]
  result = subprocess.run([sys.executable, "-m", "bracplus_jax.collect", *args, *out],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  assert fragment in result.stderr.strip().splitlines()[-1]
  assert not os.path.exists(tmp_path / "x.hdf5")


class _FakePolicy:
  def __init__(self, step):
    self.step = step

  def batch_policy(self, seed):
    return self.step  # stands for the policy: the fake evaluate reads it


class _FakeRun(collect.SACRun):
  def checkpoint(self, evaluation):
    return _FakePolicy(evaluation["step"])


@pytest.mark.parametrize("medium_episodes, expected_step", [(0, 20), (30, 30)])
def test_medium_is_the_first_past_the_threshold_or_the_nearest_over_fresh_episodes(
    monkeypatch, medium_episodes, expected_step):
  # Random 0, expert 1000, fraction 0.3: threshold 300, candidates within 150 of it.
  # SAC's few-episode means; after step 50 (far past the threshold) nothing counts as medium.
  evaluated = {10: 100.0, 20: 320.0, 30: 260.0, 40: 420.0, 50: 1000.0, 60: 300.0}
  fresh = {20: 380.0, 30: 310.0, 40: 430.0}  # what many fresh episodes give
  calls = []

  def evaluate(env_id, step, episodes, seed):
    calls.append((step, episodes))
    return np.full(episodes, fresh[step])

  monkeypatch.setattr(collect.sac, "evaluate", evaluate)
  options = collect.RecipeOptions(medium_fraction=0.3, medium_episodes=medium_episodes, progress=False)
  family = collect.Family("Hopper-v5", options, "unused")
  family.__dict__["run"] = _FakeRun("unused", {"evaluations": [
      {"step": step, "return_mean": value, "checkpoint": f"{step}.msgpack"} for step, value in evaluated.items()]})
  family.__dict__["references"] = collect.References(0.0, 1000.0, "test", "test")
  assert family.medium["step"] == expected_step
  # Only the evaluations within 150 of 300 before step 50 are evaluated again.
  assert sorted(calls) == ([] if medium_episodes == 0 else [(20, 30), (30, 30), (40, 30)])
  if medium_episodes:
    assert family.medium["reevaluated_return"] == 310.0
