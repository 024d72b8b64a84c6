"""From stored rows to (s, a, r, s', done) transitions on the device, and batches drawn from them."""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bracplus_jax.data.raw import RawDataset


@flax.struct.dataclass
class Transitions:
  """(s, a, r, s', done) arrays with a leading transition axis, all float32.

  `dones` is 1.0 where the episode terminated (D4RL's `terminals`); time-limit
  ends are not terminal, so the critic bootstraps through them.
  """

  observations: jax.Array  # [N, obs_dim]
  actions: jax.Array  # [N, act_dim], inside [-1, 1]
  rewards: jax.Array  # [N]
  next_observations: jax.Array  # [N, obs_dim]
  dones: jax.Array  # [N]
  # A batch's dataset rows [B] (`sample`); None for the dataset itself.
  index: Optional[jax.Array] = None

  @property
  def size(self) -> int:
    return self.rewards.shape[0]

  @property
  def observation_dim(self) -> int:
    return self.observations.shape[-1]

  @property
  def action_dim(self) -> int:
    return self.actions.shape[-1]

  def sample(self, key: jax.Array, batch_size: int) -> "Transitions":
    """A batch drawn uniformly with replacement; pure and jittable."""
    index = jax.random.randint(key, (batch_size,), 0, self.size)
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), self.replace(index=None)).replace(index=index)


@flax.struct.dataclass
class RewardScale:
  """The affine map r -> (r - low) / (high - low) that put the rewards into [0, 1]."""

  low: float = flax.struct.field(pytree_node=False, default=0.0)
  high: float = flax.struct.field(pytree_node=False, default=1.0)

  @classmethod
  def fit(cls, rewards: np.ndarray) -> "RewardScale":
    """The paper's scaling over the whole dataset (App. F). Constant rewards map to 0."""
    low, high = float(np.min(rewards)), float(np.max(rewards))
    return cls(low=low, high=high if high > low else low + 1.0)

  def scale(self, rewards):
    return (rewards - self.low) / (self.high - self.low)

  def unscale(self, rewards):
    return rewards * (self.high - self.low) + self.low


def qlearning_rows(raw: RawDataset) -> np.ndarray:
  """Indices of the rows that become transitions, as D4RL's `qlearning_dataset` picks them.

  A row that ends in a timeout is dropped: its next observation is either the
  next episode's first or not stored, and in both cases it is no transition.
  Without `next_observations` the last row is dropped too (it has no next row).
  """
  keep = ~raw.timeouts
  if raw.next_observations is None:
    keep[-1:] = False
  return np.flatnonzero(keep)


def build_transitions(raw: RawDataset, reward_scale: Optional[RewardScale]) -> dict[str, np.ndarray]:
  """(s, a, r, s', done) host arrays in float32; done = terminals, so timeouts bootstrap."""
  rows = qlearning_rows(raw)
  if raw.next_observations is not None:
    next_observations = raw.next_observations[rows]
  else:
    next_observations = raw.observations[rows + 1]
  rewards = raw.rewards[rows].astype(np.float64)
  if reward_scale is not None:
    rewards = reward_scale.scale(rewards)
  return dict(
      observations=raw.observations[rows].astype(np.float32),
      actions=raw.actions[rows].astype(np.float32),
      rewards=rewards.astype(np.float32),
      next_observations=next_observations.astype(np.float32),
      dones=raw.terminals[rows].astype(np.float32),
  )


def episode_bounds(raw: RawDataset) -> list[tuple[int, int]]:
  """[start, end) row ranges of the episodes: each ends at a terminal, a timeout or the last row."""
  ends = np.flatnonzero(raw.terminals | raw.timeouts) + 1
  if len(ends) == 0 or ends[-1] != len(raw.rewards):
    ends = np.append(ends, len(raw.rewards))
  starts = np.concatenate([[0], ends[:-1]])
  return list(zip(starts.tolist(), ends.tolist()))
