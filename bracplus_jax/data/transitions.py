"""Transitions on the device, and drawing batches from them inside compiled code."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


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
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), self)
