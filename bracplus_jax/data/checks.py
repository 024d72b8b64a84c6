"""What a dataset must hold before any compute is spent on it.

Every array is checked where it is read: its dtype, its shape and its length;
then its values (finite, actions inside the tanh box), the reference scores
and the sizes an environment expects. Each failure is one InputError line that
names the source, the key, what was found and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Optional

import numpy as np

from bracplus_jax.data.raw import RawDataset
from bracplus_jax.errors import InputError

VECTORS = "real numbers of shape [N, dim], dim >= 1"
NUMBERS = "real numbers of shape [N] (or [N, 1])"
FLAGS = "booleans or 0/1 of shape [N] (or [N, 1])"
# What each per-step key holds, under D4RL's names and Minari's.
ROW_KINDS = {
    "observations": VECTORS, "next_observations": VECTORS, "actions": VECTORS,
    "rewards": NUMBERS,
    "terminals": FLAGS, "timeouts": FLAGS, "terminations": FLAGS, "truncations": FLAGS,
}
_REAL_DTYPE_KINDS = "biuf"  # numpy's bool, signed integer, unsigned integer and float
_DTYPE_KIND_NAMES = {"S": "byte strings", "U": "text", "O": "objects", "c": "complex numbers",
                     "V": "records or opaque bytes", "M": "dates", "m": "time spans"}
# Transitions are float32: a larger magnitude would become Inf on the device.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def describe(values: np.ndarray) -> str:
  """'dtype |S24 (byte strings), shape (10,)': what an array was found to be."""
  kind = _DTYPE_KIND_NAMES.get(values.dtype.kind)
  if values.dtype.kind == "O" and values.size:  # h5py's text, ragged rows and references
    kind = f"objects such as {type(values.flat[0]).__name__}"
  return f"dtype {values.dtype}{f' ({kind})' if kind else ''}, shape {values.shape}"


def _short_repr(value: Any) -> str:
  return " ".join(repr(value).split())[:60]


def check_column(source: str, key: str, values: Any) -> np.ndarray:
  """One per-step array, checked against ROW_KINDS[key] and returned as it is used.

  Rewards and flags stored as [N, 1] come back as [N]; flags come back as booleans.
  """
  values = np.asarray(values)
  expected = ROW_KINDS[key]
  if values.dtype.kind not in _REAL_DTYPE_KINDS:
    raise InputError(f"{source}: key '{key}' has {describe(values)}; expected {expected}")
  if expected == VECTORS:
    if values.ndim != 2 or values.shape[1] == 0:
      raise InputError(f"{source}: key '{key}' has {describe(values)}; expected {expected}")
    return values
  if values.ndim == 2 and values.shape[1] == 1:
    values = values[:, 0]
  if values.ndim != 1:
    raise InputError(f"{source}: key '{key}' has {describe(values)}; expected {expected}")
  return _as_flags(source, key, values) if expected == FLAGS else values


def _as_flags(source: str, key: str, values: np.ndarray) -> np.ndarray:
  if values.dtype == bool:
    return values
  other = (values != 0) & (values != 1)  # NaN included
  if other.any():
    row = int(np.flatnonzero(other)[0])
    raise InputError(
        f"{source}: key '{key}' ({values.dtype}) holds values other than 0 and 1 "
        f"({int(other.sum())} rows, first {values[row]:g} at row {row}); expected {FLAGS}")
  return values != 0


def check_lengths(source: str, columns: dict[str, np.ndarray]) -> None:
  rows = len(columns["rewards"])
  for key, values in columns.items():
    if len(values) != rows:
      raise InputError(
          f"{source}: key '{key}' has {len(values)} rows but 'rewards' has {rows}; "
          "every key needs one row per step")


def check_rows(source: str, columns: dict[str, Any]) -> dict[str, np.ndarray]:
  """D4RL's per-step keys as read: dtypes, shapes, matching lengths, at least one row."""
  checked = {key: check_column(source, key, values) for key, values in columns.items()}
  check_lengths(source, checked)
  if len(checked["rewards"]) == 0:
    raise InputError(f"{source}: the dataset is empty (0 rows); expected at least one step")
  if "next_observations" in checked and (
      checked["next_observations"].shape[1:] != checked["observations"].shape[1:]):
    raise InputError(
        f"{source}: key 'next_observations' has shape {checked['next_observations'].shape}, "
        f"unlike 'observations' {checked['observations'].shape}; expected the same dim")
  return checked


def reference_score(source: str, key: str, value: Any) -> Optional[float]:
  """A stored reference return: absent, or one finite number."""
  if value is None:
    return None
  is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
      value, (bool, np.bool_))
  if not is_number or not math.isfinite(value):
    raise InputError(
        f"{source}: key '{key}' holds {_short_repr(value)} ({type(value).__name__}); "
        "expected one finite number, a policy's mean return")
  return float(value)


def reference_scores(source: str, metadata: dict[str, Any],
                     prefix: str = "") -> tuple[Optional[float], Optional[float]]:
  """(ref_min_score, ref_max_score) from a dataset's metadata; scores divide by their gap."""
  low, high = (reference_score(source, f"{prefix}{name}", metadata.get(name))
               for name in ("ref_min_score", "ref_max_score"))
  if low is not None and low == high:
    raise InputError(
        f"{source}: keys '{prefix}ref_min_score' and '{prefix}ref_max_score' are both {low:g}; "
        "expected a random and an expert policy's different mean returns")
  return low, high


def environment_id(source: str, key: str, value: Any) -> Optional[str]:
  if value is None or isinstance(value, str):
    return value
  raise InputError(
      f"{source}: key '{key}' holds {_short_repr(value)} ({type(value).__name__}); "
      "expected a gymnasium id such as 'Hopper-v5'")


def check_values(raw: RawDataset, clip_actions: bool = False) -> RawDataset:
  """Rejects NaN, Inf or float32 overflow, and actions a tanh policy cannot produce.

  Actions outside [-1, 1] are an error unless `clip_actions`, which clips them
  with a warning that says how many there were.
  """
  for key in ("observations", "actions", "rewards", "next_observations"):
    values = getattr(raw, key)
    if values is None:
      continue
    finite = _finite_in_float32(values).reshape(len(values), -1).all(axis=1)
    if not finite.all():
      row = int(np.flatnonzero(~finite)[0])
      raise InputError(
          f"{raw.source}: key '{key}' holds NaN, Inf or magnitudes beyond float32's "
          f"({int((~finite).sum())} rows, first at row {row}); expected finite numbers")
  outside = np.abs(raw.actions) > 1.0
  if outside.any():
    message = (f"{raw.source}: {int(outside.any(axis=1).sum())} actions lie outside [-1, 1] "
               f"(largest magnitude {float(np.abs(raw.actions).max()):.4g})")
    if not clip_actions:
      raise InputError(
          f"{message}; a tanh policy cannot produce them. Rescale them, or clip them "
          "with clip_actions=True (--clip_actions)")
    warnings.warn(f"{message}; clipped to [-1, 1]", stacklevel=2)
    raw = dataclasses.replace(raw, actions=np.clip(raw.actions, -1.0, 1.0))
  return raw


def _finite_in_float32(values: np.ndarray) -> np.ndarray:
  """Where values stay finite as float32; integers and booleans always do."""
  if values.dtype.kind != "f":
    return np.ones(values.shape, bool)
  finite = np.isfinite(values)
  if values.dtype.itemsize > 4:
    finite &= np.abs(values) <= FLOAT32_MAX
  return finite


def check_env_dims(raw: RawDataset, env_id: str) -> None:
  """The dataset's observation and action sizes must match the environment's."""
  from bracplus_jax import envs  # gymnasium is imported only when an env is asked for

  observation_space, action_space = envs.spaces(env_id)
  observation_shape, action_shape = observation_space.shape, action_space.shape
  for key, data_shape, env_shape in (
      ("observations", raw.observations.shape[1:], observation_shape),
      ("actions", raw.actions.shape[1:], action_shape)):
    if tuple(data_shape) != tuple(env_shape or ()):
      raise InputError(
          f"{raw.source}: '{key}' have shape {tuple(data_shape)} per step but "
          f"{env_id} expects {tuple(env_shape or ())}")
