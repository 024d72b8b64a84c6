"""load_minari against small Minari datasets written to a temporary local root."""

from __future__ import annotations

import json
import shutil
import warnings

import gymnasium as gym
import minari
import minari.storage.hosting
import numpy as np
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer

from bracplus_jax.data.minari_source import load_minari
from bracplus_jax.errors import InputError

COLLECTED_ID = "test/inverted-pendulum/mixed-v0"
# Minari asks for these and warns when they are missing.
DESCRIPTION = dict(
    algorithm_name="constant push",
    author="bracplus-jax tests",
    author_email="tests@example.org",
    code_permalink="https://example.org/bracplus-jax",
    description="a few short InvertedPendulum episodes",
)
# Pushing hard topples the pole (terminated); no push balances it until the
# ten-step limit (truncated).
PUSHES = (3.0, 0.0, 3.0, 0.0, -3.0)


def _collect(dataset_id: str) -> list[dict[str, np.ndarray]]:
  """Writes a dataset through DataCollector; returns the episodes as stepped."""
  env = minari.DataCollector(
      gym.make("InvertedPendulum-v5", max_episode_steps=10))
  episodes = []
  for seed, push in enumerate(PUSHES):
    observation, _ = env.reset(seed=seed)
    episode = {"observations": [observation], "actions": [], "rewards": [],
               "terminations": [], "truncations": []}
    done = False
    while not done:
      action = np.array([push], dtype=np.float32)
      observation, reward, terminated, truncated, _ = env.step(action)
      episode["observations"].append(observation)
      episode["actions"].append(action)
      episode["rewards"].append(reward)
      episode["terminations"].append(terminated)
      episode["truncations"].append(truncated)
      done = terminated or truncated
    episodes.append({key: np.asarray(value) for key, value in episode.items()})
  env.create_dataset(
      dataset_id=dataset_id, eval_env="InvertedPendulum-v5",
      ref_min_score=5.0, ref_max_score=1000.0, **DESCRIPTION)
  env.close()
  return episodes


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
  """A local root holding COLLECTED_ID, and the episodes written into it."""
  root = tmp_path_factory.mktemp("collected")
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    episodes = _collect(COLLECTED_ID)
  return root, episodes


@pytest.fixture
def collected_root(collected, monkeypatch):
  root, episodes = collected
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
  return episodes


@pytest.fixture
def empty_root(tmp_path, monkeypatch):
  root = tmp_path / "minari"
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
  return root


class _Remote:
  """Stands in for Minari's cloud storage, serving a local folder's datasets."""

  def __init__(self, folder):
    self.folder = folder

  def list_datasets(self, prefix=None):
    if self.folder is None:
      return []
    ids = [str(path.parent.relative_to(self.folder))
           for path in self.folder.glob("**/data")]
    return [i for i in ids if prefix is None or i.startswith(prefix)]

  def get_dataset_metadata(self, dataset_id):
    path = self.folder / dataset_id / "data" / "metadata.json"
    return json.loads(path.read_text())

  def download_dataset(self, dataset_id, path):
    shutil.copytree(self.folder / dataset_id, path / dataset_id)


def _use_remote(monkeypatch, remote) -> None:
  monkeypatch.setattr(minari.storage.hosting, "get_cloud_storage",
                      lambda remote_path=None, token=None: remote)


def _no_network(monkeypatch) -> None:
  def refuse(remote_path=None, token=None):
    raise ConnectionError("Failed to resolve 'huggingface.co'")
  monkeypatch.setattr(minari.storage.hosting, "get_cloud_storage", refuse)


def _concatenated(episodes, key, cut=slice(None)):
  return np.concatenate([episode[key][cut] for episode in episodes])


def test_rows_are_the_episodes_concatenated(collected_root):
  episodes = collected_root
  raw = load_minari(COLLECTED_ID)

  rows = sum(len(episode["rewards"]) for episode in episodes)
  assert raw.rewards.shape == (rows,)
  assert raw.observations.shape == raw.next_observations.shape == (rows, 4)
  assert raw.actions.shape == (rows, 1)
  np.testing.assert_allclose(
      raw.observations, _concatenated(episodes, "observations", slice(0, -1)),
      rtol=1e-6)
  np.testing.assert_allclose(
      raw.next_observations, _concatenated(episodes, "observations",
                                           slice(1, None)), rtol=1e-6)
  np.testing.assert_array_equal(raw.actions, _concatenated(episodes, "actions"))
  np.testing.assert_array_equal(raw.rewards, _concatenated(episodes, "rewards"))


def test_terminals_and_timeouts_fall_on_episode_ends(collected_root):
  episodes = collected_root
  raw = load_minari(COLLECTED_ID)

  assert any(episode["terminations"][-1] for episode in episodes)
  assert any(episode["truncations"][-1] for episode in episodes)
  assert raw.terminals.dtype == raw.timeouts.dtype == bool
  np.testing.assert_array_equal(
      raw.terminals, _concatenated(episodes, "terminations"))
  np.testing.assert_array_equal(
      raw.timeouts, _concatenated(episodes, "truncations"))
  ends = np.cumsum([len(episode["rewards"]) for episode in episodes]) - 1
  assert set(np.flatnonzero(raw.terminals | raw.timeouts)) == set(ends)


def test_references_env_and_metadata_are_read_back(collected_root):
  episodes = collected_root
  raw = load_minari(COLLECTED_ID)

  assert raw.source == f"minari:{COLLECTED_ID}"
  assert raw.ref_min_score == 5.0
  assert raw.ref_max_score == 1000.0
  assert raw.env_id == "InvertedPendulum-v5"
  assert raw.metadata["minari_id"] == COLLECTED_ID
  assert raw.metadata["total_episodes"] == len(episodes)
  assert raw.metadata["total_steps"] == raw.rewards.shape[0]
  assert raw.metadata["algorithm_name"] == "constant push"


def _buffer(observations, terminations, truncations) -> EpisodeBuffer:
  steps = len(terminations)
  return EpisodeBuffer(
      observations=list(observations),
      actions=[np.full(2, 0.1 * t, dtype=np.float32) for t in range(steps)],
      rewards=[float(t) for t in range(steps)],
      terminations=list(terminations),
      truncations=list(truncations))


def _create_from_buffers(dataset_id, buffers, observation_space, action_space):
  with warnings.catch_warnings():
    # Minari warns that a dataset made without an environment has none.
    warnings.simplefilter("ignore", UserWarning)
    minari.create_dataset_from_buffers(
        dataset_id, buffers, observation_space=observation_space,
        action_space=action_space, **DESCRIPTION)


def test_an_episode_cut_short_ends_in_a_timeout(empty_root):
  observation_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
  action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
  observations = np.arange(30, dtype=np.float32).reshape(10, 3) / 10
  cut_short = _buffer(observations[:5], [False] * 4, [False] * 4)
  terminated = _buffer(observations[5:], [False, False, False, True],
                       [False] * 4)
  _create_from_buffers("test/logged/cut-v0", [cut_short, terminated],
                       observation_space, action_space)

  raw = load_minari("test/logged/cut-v0", download=False)

  np.testing.assert_array_equal(
      raw.observations, np.concatenate([observations[:4], observations[5:9]]))
  np.testing.assert_array_equal(
      raw.next_observations,
      np.concatenate([observations[1:5], observations[6:]]))
  np.testing.assert_array_equal(raw.timeouts, [0, 0, 0, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(raw.terminals, [0, 0, 0, 0, 0, 0, 0, 1])
  assert raw.ref_min_score is None and raw.ref_max_score is None
  assert raw.env_id is None


def test_dict_observations_are_refused(empty_root):
  observation_space = gym.spaces.Dict({
      "observation": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
      "desired_goal": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
  action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
  observations = {key: [np.zeros(2, np.float32)] * 3
                  for key in ("observation", "desired_goal")}
  episode = EpisodeBuffer(
      observations=observations, actions=[np.zeros(2, np.float32)] * 2,
      rewards=[0.0, 0.0], terminations=[False, True],
      truncations=[False, False])
  _create_from_buffers("test/maze/goals-v0", [episode], observation_space,
                       action_space)

  with pytest.raises(InputError, match="only flat Box observations") as error:
    load_minari("test/maze/goals-v0")
  assert "test/maze/goals-v0" in str(error.value)
  assert "\n" not in str(error.value)


def test_a_missing_dataset_without_download_names_the_local_root(empty_root):
  with pytest.raises(InputError) as error:
    load_minari("mujoco/hopper/medium-v0", download=False)
  message = str(error.value)
  assert "mujoco/hopper/medium-v0" in message
  assert str(empty_root) in message
  assert "\n" not in message


def test_a_failed_download_says_where_to_put_the_dataset(empty_root,
                                                         monkeypatch):
  _no_network(monkeypatch)
  with pytest.raises(InputError) as error:
    load_minari("mujoco/hopper/medium-v0")
  message = str(error.value)
  assert "mujoco/hopper/medium-v0" in message
  assert "download failed" in message
  assert str(empty_root / "mujoco" / "hopper" / "medium-v0") in message
  assert "\n" not in message
  assert isinstance(error.value.__cause__, ConnectionError)


@pytest.mark.parametrize("dataset_id",
                         ["mujoco/nothing/here-v0", "no spaces-v0"])
def test_an_unknown_id_is_named(empty_root, monkeypatch, dataset_id):
  _use_remote(monkeypatch, _Remote(None))
  with pytest.raises(InputError) as error:
    load_minari(dataset_id)
  assert f"'{dataset_id}'" in str(error.value)
  assert "could not be downloaded" in str(error.value)
  assert "\n" not in str(error.value)
  assert isinstance(error.value.__cause__, ValueError)


def test_download_fetches_into_the_local_root(collected, empty_root, tmp_path,
                                              monkeypatch):
  collected_root, episodes = collected
  remote_root = tmp_path / "remote"
  _use_remote(monkeypatch, _Remote(remote_root))
  # Un-namespaced so the copy needs no namespace metadata from the remote.
  shutil.copytree(collected_root / COLLECTED_ID, remote_root / "pendulum-v0")
  metadata_path = remote_root / "pendulum-v0" / "data" / "metadata.json"
  metadata = json.loads(metadata_path.read_text())
  metadata["dataset_id"] = "pendulum-v0"
  metadata_path.write_text(json.dumps(metadata))

  raw = load_minari("pendulum-v0")

  assert (empty_root / "pendulum-v0" / "data").is_dir()
  assert raw.rewards.shape[0] == sum(len(e["rewards"]) for e in episodes)
  np.testing.assert_array_equal(raw.actions, _concatenated(episodes, "actions"))
