"""Minari datasets as `RawDataset`s: episodes flattened into D4RL's row layout."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Iterable, Optional

import numpy as np

from bracplus_jax.data import checks
from bracplus_jax.data.raw import RawDataset
from bracplus_jax import extras
from bracplus_jax.errors import InputError


def load_minari(dataset_id: str, download: bool = True) -> RawDataset:
  """Reads Minari dataset `dataset_id` from the local Minari root.

  With `download`, a dataset missing locally is fetched from Minari's remote
  first. Every failure, Minari's own included, is raised as one `InputError`.
  """
  # Imported here: minari pulls in gymnasium and its storage back ends; it is an extra.
  minari = extras.import_optional("minari", f"dataset 'minari:{dataset_id}'")
  from minari.storage import get_dataset_path

  local_root = get_dataset_path()
  dataset_dir = get_dataset_path(dataset_id)
  if not dataset_dir.joinpath("data").is_dir():
    if not download:
      raise InputError(
          f"Minari dataset '{dataset_id}' is not in the local Minari root "
          f"{local_root} (downloading is off); "
          f"{_by_hand(dataset_id, dataset_dir)}")
    _download(minari, dataset_id, local_root, dataset_dir)

  try:
    dataset = minari.load_dataset(dataset_id, download=False)
  except Exception as error:
    raise InputError(
        f"Minari dataset '{dataset_id}' at {dataset_dir} could not be read: "
        f"{_one_line(error)}") from error
  _check_spaces(dataset_id, dataset.observation_space, dataset.action_space)
  return _raw_dataset(dataset_id, dataset)


def _download(minari, dataset_id: str, local_root: pathlib.Path,
              dataset_dir: pathlib.Path) -> None:
  try:
    minari.download_dataset(dataset_id)
  except ValueError as error:
    # Minari's ValueErrors here mean a malformed, unknown or incompatible id.
    raise InputError(
        f"Minari dataset '{dataset_id}' is not in the local Minari root "
        f"{local_root} and could not be downloaded: {_one_line(error)}"
    ) from error
  except Exception as error:
    raise InputError(
        f"Minari dataset '{dataset_id}' is not in the local Minari root "
        f"{local_root} and its download failed ({_one_line(error)}); "
        f"{_by_hand(dataset_id, dataset_dir)}") from error


def _by_hand(dataset_id: str, dataset_dir: pathlib.Path) -> str:
  return (f"fetch it where there is network access (`minari download "
          f"{dataset_id}`) and copy it by hand to {dataset_dir}, so that "
          f"{dataset_dir / 'data'} holds its files (MINARI_DATASETS_PATH sets "
          f"the root)")


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _check_spaces(dataset_id: str, observation_space, action_space) -> None:
  """Only flat continuous data fits D4RL's [N, dim] rows."""
  if not _is_flat_box(observation_space):
    raise InputError(
        f"Minari dataset '{dataset_id}' has observation space "
        f"{_one_line_space(observation_space)}; only flat Box observations "
        f"are supported (dict observations of goal-conditioned datasets are "
        f"not)")
  if not _is_flat_box(action_space):
    raise InputError(
        f"Minari dataset '{dataset_id}' has action space "
        f"{_one_line_space(action_space)}; only flat Box (continuous) actions "
        f"are supported")


def _is_flat_box(space) -> bool:
  import gymnasium as gym
  return isinstance(space, gym.spaces.Box) and len(space.shape) == 1


def _one_line_space(space) -> str:
  return " ".join(repr(space).split())


def _raw_dataset(dataset_id: str, dataset) -> RawDataset:
  source = f"Minari dataset '{dataset_id}' at {dataset.storage.data_path}"
  try:
    columns = _flatten_episodes(dataset.iterate_episodes())
  except InputError as error:
    raise InputError(f"{source}: {error}") from error
  except Exception as error:
    raise InputError(f"{source} could not be read: {_one_line(error)}") from error
  stored = dataset.storage.metadata
  ref_min_score, ref_max_score = checks.reference_scores(f"{source} (metadata.json)", stored)
  return RawDataset(
      source=f"minari:{dataset_id}",
      metadata=_metadata(dataset_id, dataset, stored),
      ref_min_score=ref_min_score,
      ref_max_score=ref_max_score,
      env_id=_env_id(stored),
      **columns,
  )


def _flatten_episodes(episodes: Iterable[Any]) -> dict[str, np.ndarray]:
  """Concatenates episodes into rows; each episode's last row ends it."""
  parts = [_episode_rows(episode) for episode in episodes]
  parts = [part for part in parts if part["rewards"].shape[0] > 0]
  if not parts:
    raise InputError("it holds no steps; expected at least one episode step")
  return {key: np.concatenate([part[key] for part in parts])
          for key in parts[0]}


def _episode_rows(episode) -> dict[str, np.ndarray]:
  """One episode's rows in D4RL's layout, its arrays checked as they were stored."""
  source = f"episode {episode.id}"
  columns = {key: checks.check_column(source, key, getattr(episode, key))
             for key in ("observations", "actions", "rewards", "terminations", "truncations")}
  observations, steps = columns.pop("observations"), columns["rewards"].shape[0]
  if observations.shape[0] != steps + 1 or columns["actions"].shape[0] != steps:
    raise InputError(
        f"{source} has {observations.shape[0]} observations and "
        f"{columns['actions'].shape[0]} actions for {steps} rewards; expected steps + 1 "
        f"observations and one action per step")
  checks.check_lengths(source, columns)
  timeouts = columns["truncations"].copy()
  if steps > 0 and not (columns["terminations"][-1] or timeouts[-1]):
    # A logged episode cut short: mark its end so it never runs into the next.
    timeouts[-1] = True
  return {
      "observations": observations[:-1],
      "actions": columns["actions"],
      "rewards": columns["rewards"],
      "terminals": columns["terminations"],
      "timeouts": timeouts,
      "next_observations": observations[1:],
  }


def _env_id(stored: dict[str, Any]) -> Optional[str]:
  """The evaluation environment's id, else the collecting one's."""
  for key in ("eval_env_spec", "env_spec"):
    if stored.get(key) is not None:
      return json.loads(stored[key])["id"]
  return None


def _metadata(dataset_id: str, dataset, stored: dict[str, Any]) -> dict:
  metadata = {
      "minari_id": dataset_id,
      "minari_version": stored.get("minari_version"),
      "data_path": str(dataset.storage.data_path),
      "total_episodes": int(dataset.total_episodes),
      "total_steps": int(dataset.total_steps),
      "dataset_size_mb": stored.get("dataset_size"),  # only ever shown
  }
  for key in ("algorithm_name", "env_spec", "eval_env_spec",
              "ref_min_score", "ref_max_score", "num_episodes_average_score"):
    if stored.get(key) is not None:
      metadata[key] = stored[key]
  return metadata
