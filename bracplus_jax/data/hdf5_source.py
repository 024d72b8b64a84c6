"""Files in D4RL's HDF5 format: D4RL's own, the collector's (`bracplus_jax.collection`) and users' logs."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import h5py
import numpy as np

from bracplus_jax.data import checks
from bracplus_jax.data.raw import RawDataset
from bracplus_jax.errors import InputError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
ROW_KEYS = (*REQUIRED_KEYS, "timeouts", "next_observations")


def read(path: str, max_episode_steps: Optional[int] = None) -> RawDataset:
  """Reads a D4RL-format file into host arrays, checking every key's dtype and shape.

  A file without `timeouts` (D4RL v0) gets them from `max_episode_steps`, the
  way D4RL's `qlearning_dataset` counts steps; without either it is an error.
  """
  return _read_file(path, lambda file: _read_open_file(file, path, max_episode_steps))


def read_references(path: str) -> tuple[Optional[float], Optional[float], Optional[str]]:
  """(ref_min_score, ref_max_score, env_id) from a file's `metadata/`, without reading its rows."""
  return _read_file(path, lambda file: _references(path, _read_metadata(file, path)))


def _read_file(path: str, read_open_file: Callable[[h5py.File], Any]) -> Any:
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise InputError(f"{path}: not a file")
  try:
    with h5py.File(path, "r") as file:
      return read_open_file(file)
  except InputError:
    raise
  except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
    raise InputError(
        f"{path}: cannot be read as a D4RL-format HDF5 file ({_first_line(error)}); "
        "is it complete and really HDF5?") from error


def _first_line(error: Exception) -> str:
  return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _read_open_file(file: h5py.File, path: str, max_episode_steps: Optional[int]) -> RawDataset:
  for key in REQUIRED_KEYS:
    if key not in file:
      raise InputError(
          f"{path}: missing key '{key}'; a D4RL-format file needs "
          f"{', '.join(REQUIRED_KEYS)} (and timeouts)")
  columns = checks.check_rows(
      path, {key: _read_dataset(file[key], path) for key in ROW_KEYS if key in file})
  metadata = _read_metadata(file, path)
  if "timeouts" not in columns:
    if max_episode_steps is None:
      raise InputError(
          f"{path}: missing key 'timeouts' (where each episode was cut by a time "
          "limit); add it, all False if no episode was cut")
    columns["timeouts"] = _timeouts_from_episode_steps(columns["terminals"], max_episode_steps)
  ref_min_score, ref_max_score, env_id = _references(path, metadata)
  return RawDataset(
      source=path,
      observations=columns["observations"],
      actions=columns["actions"],
      rewards=columns["rewards"],
      terminals=columns["terminals"],
      timeouts=columns["timeouts"],
      next_observations=columns.get("next_observations"),
      metadata=metadata,
      ref_min_score=ref_min_score,
      ref_max_score=ref_max_score,
      env_id=env_id,
  )


def _references(path: str, metadata: dict[str, Any]):
  return (*checks.reference_scores(path, metadata, prefix="metadata/"),
          checks.environment_id(path, "metadata/env_id", metadata.get("env_id")))


def _read_dataset(item: Any, path: str) -> Any:
  """An HDF5 dataset's stored value; a group, or bytes h5py cannot read, are one-line errors."""
  key = item.name.lstrip("/")
  if not isinstance(item, h5py.Dataset):
    kind = "a group" if isinstance(item, h5py.Group) else f"a {type(item).__name__}"
    raise InputError(f"{path}: key '{key}' is {kind}, not a dataset; expected an array")
  try:
    return item[()]
  except (OSError, ValueError, TypeError, RuntimeError) as error:
    raise InputError(
        f"{path}: key '{key}' cannot be read ({_first_line(error)}); "
        "is the file complete?") from error


def _timeouts_from_episode_steps(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
  timeouts = np.zeros_like(terminals)
  episode_step = 0
  for i, terminal in enumerate(terminals):
    if episode_step == max_episode_steps - 1:
      timeouts[i] = True
    if terminal or timeouts[i]:
      episode_step = 0
    else:
      episode_step += 1
  return timeouts


def _read_metadata(file: h5py.File, path: str) -> dict[str, Any]:
  """The `metadata/` group's values by their names under it ('versions/numpy')."""
  if "metadata" not in file:
    return {}
  if not isinstance(file["metadata"], h5py.Group):
    raise InputError(
        f"{path}: key 'metadata' is a dataset; expected a group of metadata/<name> values")
  return _read_group(file["metadata"], path)


def _read_group(group: h5py.Group, path: str, prefix: str = "") -> dict[str, Any]:
  values = {}
  for key, item in group.items():
    if isinstance(item, h5py.Group):
      values.update(_read_group(item, path, f"{prefix}{key}/"))
    elif item is not None:
      values[f"{prefix}{key}"] = _plain_value(_read_dataset(item, path))
  return values


def _plain_value(value: Any) -> Any:
  """Text as str, scalars as Python's; undecodable bytes are replaced (metadata is mostly shown)."""
  if isinstance(value, bytes):
    return value.decode(errors="replace")
  if isinstance(value, np.generic):
    return value.item()
  return value
