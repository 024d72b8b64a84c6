"""Files in D4RL's HDF5 format: D4RL's own, the collector's (`bracplus_jax.collection`) and users' logs."""

from __future__ import annotations

import os
from typing import Any, Optional

import h5py
import numpy as np

from bracplus_jax.data.raw import RawDataset
from bracplus_jax.errors import InputError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


def read(path: str, max_episode_steps: Optional[int] = None) -> RawDataset:
  """Reads a D4RL-format file into host arrays, checking its keys and shapes.

  A file without `timeouts` (D4RL v0) gets them from `max_episode_steps`, the
  way D4RL's `qlearning_dataset` counts steps; without either it is an error.
  """
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise InputError(f"{path}: not a file")
  try:
    with h5py.File(path, "r") as file:
      return _read_open_file(file, path, max_episode_steps)
  except InputError:
    raise
  except (OSError, KeyError, ValueError, TypeError) as error:
    raise InputError(
        f"{path}: cannot be read as a D4RL-format HDF5 file ({_first_line(error)}); "
        "is it complete and really HDF5?") from error


def _first_line(error: Exception) -> str:
  return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def read_metadata(path: str) -> dict[str, Any]:
  """The `metadata/` group of a D4RL-format file, without reading its rows."""
  try:
    with h5py.File(path, "r") as file:
      return _read_group(file["metadata"]) if "metadata" in file else {}
  except OSError as error:
    raise InputError(f"{path}: cannot be read as an HDF5 file ({_first_line(error)})") from error


def _read_open_file(file: h5py.File, path: str, max_episode_steps: Optional[int]) -> RawDataset:
  for key in REQUIRED_KEYS:
    if key not in file or not isinstance(file[key], h5py.Dataset):
      raise InputError(
          f"{path}: missing key '{key}'; a D4RL-format file needs "
          f"{', '.join(REQUIRED_KEYS)} (and timeouts)")
  arrays = {key: file[key][()] for key in REQUIRED_KEYS}
  for key in ("timeouts", "next_observations"):
    if key in file:
      arrays[key] = file[key][()]
  metadata = _read_group(file["metadata"]) if "metadata" in file else {}

  _check_shapes(arrays, path)
  rows = len(arrays["rewards"])
  if "timeouts" not in arrays:
    if max_episode_steps is None:
      raise InputError(
          f"{path}: missing key 'timeouts' (where each episode was cut by a time "
          "limit); add it, all False if no episode was cut")
    arrays["timeouts"] = _timeouts_from_episode_steps(
        arrays["terminals"].astype(bool), max_episode_steps)
  return RawDataset(
      source=path,
      observations=arrays["observations"],
      actions=arrays["actions"],
      rewards=arrays["rewards"].reshape(rows),
      terminals=arrays["terminals"].reshape(rows).astype(bool),
      timeouts=arrays["timeouts"].reshape(rows).astype(bool),
      next_observations=arrays.get("next_observations"),
      metadata=metadata,
      ref_min_score=_optional_float(metadata.get("ref_min_score")),
      ref_max_score=_optional_float(metadata.get("ref_max_score")),
      env_id=_optional_str(metadata.get("env_id")),
  )


def _check_shapes(arrays: dict[str, np.ndarray], path: str) -> None:
  rows = len(arrays["rewards"])
  expected_ndim = {"observations": 2, "actions": 2, "next_observations": 2}
  for key, array in arrays.items():
    ndim = expected_ndim.get(key, 1)
    if array.ndim != ndim and not (ndim == 1 and array.ndim == 2 and array.shape[1] == 1):
      raise InputError(
          f"{path}: key '{key}' has shape {array.shape}; expected {ndim} dimension(s)")
    if len(array) != rows:
      raise InputError(
          f"{path}: key '{key}' has {len(array)} rows but 'rewards' has {rows}; "
          "every key needs one row per step")
  if "next_observations" in arrays and (
      arrays["next_observations"].shape[1:] != arrays["observations"].shape[1:]):
    raise InputError(
        f"{path}: key 'next_observations' has shape {arrays['next_observations'].shape}, "
        f"unlike 'observations' {arrays['observations'].shape}")


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


def _read_group(group: h5py.Group, prefix: str = "") -> dict[str, Any]:
  values = {}
  for key, item in group.items():
    if isinstance(item, h5py.Group):
      values.update(_read_group(item, f"{prefix}{key}/"))
    else:
      value = item[()]
      if isinstance(value, bytes):
        value = value.decode()
      elif isinstance(value, np.generic):
        value = value.item()
      values[f"{prefix}{key}"] = value
  return values


def _optional_float(value: Any) -> Optional[float]:
  return None if value is None else float(value)


def _optional_str(value: Any) -> Optional[str]:
  return None if value is None else str(value)
