"""The data layer: transitions as D4RL builds them, reward scaling, scores and sampling."""

import jax
import numpy as np
import pytest

from bracplus_jax import data
from bracplus_jax.data import scores
from bracplus_jax.data.transitions import RewardScale
from conftest import episodes_dataset


def d4rl_qlearning_reference(rows, use_next_observations):
  """A plain loop in the shape of D4RL's `qlearning_dataset` (terminate_on_end=False)."""
  out = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "dones")}
  n = len(rows["rewards"])
  last = n if use_next_observations else n - 1
  for i in range(last):
    if rows["timeouts"][i]:
      continue  # the last step of a timed-out episode is skipped
    out["observations"].append(rows["observations"][i])
    out["next_observations"].append(
        rows["next_observations"][i] if use_next_observations else rows["observations"][i + 1])
    out["actions"].append(rows["actions"][i])
    out["rewards"].append(rows["rewards"][i])
    out["dones"].append(float(rows["terminals"][i]))
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


@pytest.mark.parametrize("use_next_observations", [False, True])
def test_transitions_match_d4rl_qlearning_dataset(d4rl_file, use_next_observations):
  lengths = [4, 3, 5, 2, 3]
  rows = episodes_dataset(lengths, ["terminal", "timeout", "terminal", "timeout", "cut"])
  if use_next_observations:
    rows["next_observations"] = rows["observations"] + 100.0
  path = d4rl_file(**rows)
  dataset = data.load_dataset(f"hdf5:{path}", scale_rewards=False, progress=False)
  expected = d4rl_qlearning_reference(rows, use_next_observations)
  for key, value in expected.items():
    np.testing.assert_array_equal(np.asarray(getattr(dataset.transitions, key)), value, err_msg=key)
  # Hand count: 17 rows, two timeout rows dropped, and without next_observations the last one too.
  assert dataset.transitions.size == (15 if use_next_observations else 14)
  # Two terminals, and timeouts are never terminal so the critic bootstraps through them.
  assert np.asarray(dataset.transitions.dones).sum() == 2


def test_terminal_row_is_kept_and_done_while_timeout_row_is_dropped(d4rl_file):
  rows = episodes_dataset([2, 2], ["terminal", "timeout"], obs_dim=1)
  rows["observations"] = np.arange(4, dtype=np.float32)[:, None]
  rows["next_observations"] = rows["observations"] + 0.5
  path = d4rl_file(**rows)
  t = data.load_dataset(f"hdf5:{path}", progress=False).transitions
  np.testing.assert_array_equal(np.asarray(t.observations)[:, 0], [0, 1, 2])
  np.testing.assert_array_equal(np.asarray(t.next_observations)[:, 0], [0.5, 1.5, 2.5])
  np.testing.assert_array_equal(np.asarray(t.dones), [0, 1, 0])


def test_v0_files_without_timeouts_get_them_from_the_episode_length(d4rl_file):
  rows = episodes_dataset([2, 5], ["terminal", "cut"])
  del rows["timeouts"]
  raw = data.hdf5_source.read(d4rl_file(**rows), max_episode_steps=3)
  # Episode 1 terminates at row 1; the next starts at row 2 and reaches 3 steps at row 4,
  # then a new count starts that the file ends before it reaches 3.
  np.testing.assert_array_equal(np.flatnonzero(raw.timeouts), [4])


def test_episode_returns_and_lengths(d4rl_file):
  lengths = [4, 3, 5]
  rows = episodes_dataset(lengths, ["terminal", "timeout", "cut"])
  dataset = data.load_dataset(f"hdf5:{d4rl_file(**rows)}", progress=False)
  np.testing.assert_array_equal(dataset.episode_lengths, lengths)
  expected = [rows["rewards"][0:4].sum(), rows["rewards"][4:7].sum(), rows["rewards"][7:12].sum()]
  np.testing.assert_allclose(dataset.episode_returns, expected, rtol=1e-6)


def test_reward_scaling_maps_the_dataset_into_unit_interval_and_back(d4rl_file):
  rows = episodes_dataset([6, 6], ["terminal", "terminal"])
  rows["rewards"] = np.array([-2, 0, 1, 3, 2, -1, 0.5, 1, 1, 2, 2.5, 0], np.float32)
  dataset = data.load_dataset(f"hdf5:{d4rl_file(**rows)}", progress=False)
  scaled = np.asarray(dataset.transitions.rewards)
  kept = rows["rewards"][:-1]  # no next_observations: the last row is dropped
  np.testing.assert_allclose(scaled, (kept + 2.0) / 5.0, rtol=1e-6)
  assert dataset.reward_scale.low == -2.0 and dataset.reward_scale.high == 3.0
  np.testing.assert_allclose(dataset.reward_scale.unscale(scaled), kept, rtol=1e-6, atol=1e-6)
  assert dataset.raw_reward_range == (-2.0, 3.0)


def test_constant_rewards_scale_without_dividing_by_zero():
  scale = RewardScale.fit(np.full(5, 7.0))
  np.testing.assert_array_equal(scale.scale(np.full(5, 7.0)), np.zeros(5))


@pytest.mark.parametrize("name, ret, expected", [
    # 100 * (return - random) / (expert - random), by hand from D4RL's infos.py.
    ("hopper-medium-replay-v2", 1000.0, 100 * (1000 + 20.272305) / (3234.3 + 20.272305)),
    ("walker2d-medium-v2", 4592.3, 100.0),
    ("halfcheetah-random-v0", -280.178953, 0.0),
    ("pen-human-v1", 1586.548, 100 * (1586.548 - 96.262799) / (3076.8331017826877 - 96.262799)),
    ("hammer-human-v0", 0.0, 100 * 274.856578 / (12794.134825156867 + 274.856578)),
    ("door-human-v1", 2880.5693087298737, 100.0),
    ("relocate-human-v1", -6.425911, 0.0),
])
def test_d4rl_normalized_scores(name, ret, expected):
  low, high = scores.d4rl_reference_returns(name)
  assert scores.normalized_score(ret, low, high) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_hopper_reference_values_are_d4rl_s():
  assert scores.d4rl_reference_returns("hopper-medium-v2") == (-20.272305, 3234.3)
  assert scores.d4rl_reference_returns_for_env("Walker2d-v5") == (1.629008, 4592.3)
  assert scores.d4rl_reference_returns_for_env("AdroitHandPen-v1") == (96.262799, 3076.8331017826877)
  assert scores.d4rl_reference_returns_for_env("Pendulum-v1") is None


def test_dataset_metadata_reference_scores_take_precedence(d4rl_file):
  rows = episodes_dataset([3, 3], ["terminal", "terminal"])
  path = d4rl_file(metadata={"ref_min_score": -10.0, "ref_max_score": 30.0, "env_id": "Hopper-v5"},
                   **rows)
  dataset = data.load_dataset(f"hdf5:{path}", progress=False)
  assert dataset.reference_source == "dataset"
  np.testing.assert_allclose(dataset.normalized_score([10.0, -10.0]), [50.0, 0.0])


def test_no_reference_scores_gives_none(d4rl_file):
  rows = episodes_dataset([3, 3], ["terminal", "terminal"])
  dataset = data.load_dataset(f"hdf5:{d4rl_file(**rows)}", progress=False)
  assert dataset.normalized_score([1.0]) is None


def test_sample_is_jittable_uniform_and_keeps_rows_together(d4rl_file):
  rows = episodes_dataset([50, 50], ["terminal", "timeout"], obs_dim=1)
  rows["observations"] = np.arange(100, dtype=np.float32)[:, None]
  rows["rewards"] = np.arange(100, dtype=np.float32)
  t = data.load_dataset(f"hdf5:{d4rl_file(**rows)}", scale_rewards=False, progress=False).transitions
  batch = jax.jit(lambda key: t.sample(key, 20000))(jax.random.key(0))
  assert batch.observations.shape == (20000, 1) and batch.observations.dtype == np.float32
  # Each sampled row stays one row: the reward of row i is i here.
  np.testing.assert_array_equal(np.asarray(batch.observations)[:, 0], np.asarray(batch.rewards))
  counts = np.bincount(np.asarray(batch.rewards).astype(int), minlength=100)
  kept = np.asarray(t.rewards).astype(int)
  assert counts[np.setdiff1d(np.arange(100), kept)].sum() == 0
  # Uniform over the 98 transitions: a chi-square statistic far below its 0.999 quantile (~147).
  expected = 20000 / t.size
  assert ((counts[kept] - expected) ** 2 / expected).sum() < 147


def test_actions_outside_the_box_can_be_clipped_with_a_warning(d4rl_file):
  rows = episodes_dataset([3, 3], ["terminal", "terminal"])
  rows["actions"][1, 0] = 1.5
  path = d4rl_file(**rows)
  with pytest.warns(UserWarning, match="1 actions lie outside"):
    dataset = data.load_dataset(f"hdf5:{path}", clip_actions=True, progress=False)
  assert float(np.asarray(dataset.transitions.actions).max()) <= 1.0


def test_reference_returns_without_loading_the_rows(d4rl_file):
  rows = episodes_dataset([3, 3], ["terminal", "terminal"])
  own = d4rl_file("own.hdf5", metadata={"ref_min_score": 1.0, "ref_max_score": 2.0}, **rows)
  hopper = d4rl_file("hopper.hdf5", metadata={"env_id": "Hopper-v5"}, **rows)
  bare = d4rl_file("bare.hdf5", **rows)
  assert data.reference_returns(f"hdf5:{own}", None) == (1.0, 2.0, "dataset")
  assert data.reference_returns(f"hdf5:{hopper}", None)[:2] == (-20.272305, 3234.3)
  assert data.reference_returns(f"hdf5:{bare}", None) is None
  assert data.reference_returns("d4rl:walker2d-medium-v2", None)[:2] == (1.629008, 4592.3)


def test_hdf5_specs_expand_the_home_folder(d4rl_file, monkeypatch, tmp_path):
  rows = episodes_dataset([3, 3], ["terminal", "terminal"])
  d4rl_file("home.hdf5", **rows)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert data.load_dataset("hdf5:~/home.hdf5", progress=False).transitions.size == 5
