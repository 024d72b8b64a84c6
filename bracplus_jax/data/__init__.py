"""The data layer: a dataset spec string in, transitions on the device out.

Specs:
  d4rl:<name>    a public D4RL file (e.g. d4rl:hopper-medium-replay-v2), cached or downloaded
  minari:<id>    a Minari dataset (e.g. minari:mujoco/hopper/medium-v0)
  hdf5:<path>    any file in D4RL's format, such as those `bracplus_jax.collection.collect` writes

The lowest wing: it imports only the modules every wing shares (errors; envs, to check a
dataset against its environment), and every other wing may import it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import numpy as np

from bracplus_jax.data import d4rl_source, hdf5_source, scores
from bracplus_jax.data.identity import arrays_checksum
from bracplus_jax.data.checks import check_env_dims, check_values
from bracplus_jax.data.raw import RawDataset
from bracplus_jax.data.transitions import RewardScale, Transitions, build_transitions, episode_bounds
from bracplus_jax.errors import InputError

__all__ = ["OfflineDataset", "RawDataset", "RewardScale", "Transitions", "arrays_checksum", "load_dataset",
           "read_raw"]

SPEC_KINDS = ("d4rl", "minari", "hdf5")


@dataclasses.dataclass(frozen=True)
class OfflineDataset:
  """Transitions on the device plus what is needed to report on them."""

  spec: str
  transitions: Transitions
  reward_scale: Optional[RewardScale]  # None when rewards were left as stored
  episode_returns: np.ndarray  # raw (unscaled) return of every stored episode
  episode_lengths: np.ndarray
  ref_min_score: Optional[float]
  ref_max_score: Optional[float]
  reference_source: str  # where the reference returns came from, for reports
  env_id: Optional[str]
  raw_reward_range: tuple[float, float]
  metadata: dict[str, Any]
  checksum: str = ""  # `identity.arrays_checksum` of the stored rows

  @property
  def has_reference_scores(self) -> bool:
    return self.ref_min_score is not None and self.ref_max_score is not None

  def normalized_score(self, returns) -> Optional[np.ndarray]:
    """D4RL's normalised score of raw returns, or None without reference returns."""
    if not self.has_reference_scores:
      return None
    return scores.normalized_score(returns, self.ref_min_score, self.ref_max_score)


def parse_spec(spec: str) -> tuple[str, str]:
  kind, sep, name = spec.partition(":")
  if kind == "hdf5":
    name = os.path.expanduser(name)
  if not sep or kind not in SPEC_KINDS or not name:
    hint = f"; did you mean hdf5:{spec}?" if spec.endswith((".hdf5", ".h5")) else ""
    raise InputError(
        f"dataset spec '{spec}' is not one of d4rl:<name>, minari:<id>, hdf5:<path>{hint}")
  return kind, name


def read_raw(spec: str, progress: bool = True) -> RawDataset:
  """The stored rows of a dataset, fetched first where the spec needs it."""
  kind, name = parse_spec(spec)
  if kind == "hdf5":
    return hdf5_source.read(name)
  if kind == "minari":
    from bracplus_jax.data import minari_source
    return minari_source.load_minari(name)
  path = d4rl_source.fetch(name, progress=progress)
  raw = hdf5_source.read(str(path), max_episode_steps=d4rl_source.max_episode_steps(name))
  reference = d4rl_source.reference_returns(name)
  return dataclasses.replace(
      raw, source=f"d4rl:{name} ({path})",
      ref_min_score=reference[0] if reference else None,
      ref_max_score=reference[1] if reference else None,
      env_id=raw.env_id or d4rl_source.gymnasium_id(name))


def _reference_returns(ref_min_score, ref_max_score, env_id: Optional[str]):
  """The dataset's own references, else D4RL's for its environment, else none."""
  if ref_min_score is not None and ref_max_score is not None:
    return (float(ref_min_score), float(ref_max_score)), "dataset"
  reference = scores.d4rl_reference_returns_for_env(env_id) if env_id else None
  if reference is not None:
    return reference, f"D4RL's references for {env_id.split('-v')[0]}"
  return None, "none"


def reference_returns(spec: str, env_id: Optional[str]):
  """(random, expert, where from) for a dataset spec without loading its rows, or None."""
  kind, name = parse_spec(spec)
  raw_min = raw_max = None
  if kind == "hdf5":
    raw_min, raw_max, stored_env_id = hdf5_source.read_references(name)
    env_id = env_id or stored_env_id
  elif kind == "d4rl":
    reference = d4rl_source.reference_returns(name)
    if reference is not None:
      return (*reference, f"D4RL's references for {name}")
  else:
    raw = read_raw(spec)
    raw_min, raw_max, env_id = raw.ref_min_score, raw.ref_max_score, env_id or raw.env_id
  reference, source = _reference_returns(raw_min, raw_max, env_id)
  return None if reference is None else (*reference, source)


def load_dataset(spec: str, *, scale_rewards: bool = True, clip_actions: bool = False,
                 env_id: Optional[str] = None, progress: bool = True) -> OfflineDataset:
  """Reads, checks and converts a dataset; its transitions end up on the default device.

  `env_id`, when given, is checked against the dataset's dimensions and
  overrides the environment the dataset names.
  """
  raw = check_values(read_raw(spec, progress=progress), clip_actions=clip_actions)
  if env_id is not None:
    check_env_dims(raw, env_id)
  reward_scale = RewardScale.fit(raw.rewards) if scale_rewards else None
  arrays = build_transitions(raw, reward_scale)
  if len(arrays["rewards"]) == 0:
    raise InputError(
        f"{raw.source}: no transitions left once time-limit ends are dropped; "
        "expected at least one step that is not the last of a timed-out episode")
  env_id = env_id or raw.env_id
  reference, reference_source = _reference_returns(raw.ref_min_score, raw.ref_max_score, env_id)
  bounds = episode_bounds(raw)
  returns = np.array([raw.rewards[start:end].sum(dtype=np.float64) for start, end in bounds])
  return OfflineDataset(
      spec=spec,
      transitions=jax.device_put(Transitions(**arrays)),
      reward_scale=reward_scale,
      episode_returns=returns,
      episode_lengths=np.array([end - start for start, end in bounds]),
      ref_min_score=reference[0] if reference else None,
      ref_max_score=reference[1] if reference else None,
      reference_source=reference_source,
      env_id=env_id,
      raw_reward_range=(float(raw.rewards.min()), float(raw.rewards.max())),
      metadata=raw.metadata,
      checksum=arrays_checksum(raw),
  )
