"""Discounted Monte-Carlo returns of the dataset's own episodes: what a critic's fit is judged by.

Q(s, a) of the data's behaviour policy is E[sum_t gamma^t r_t] from (s, a) on; the
dataset holds one draw of that sum per transition. The episodes are read off the
transitions alone, whatever the source: one ends where `done` is set or where a
transition's next observation is not the next transition's observation (a time
limit, whose last row `build_transitions` dropped, or the end of the data).
"""

from __future__ import annotations

import numpy as np

# Rows this many steps or more before a truncated episode's end miss at most gamma^H of their
# return (0.99^460 < 1%); closer rows are not counted as complete.
TRUNCATION_HORIZON_EPSILON = 0.01


def episode_ends(observations: np.ndarray, next_observations: np.ndarray, dones: np.ndarray) -> np.ndarray:
  """[N] bool: the transition is its episode's last in the dataset."""
  ends = dones.astype(bool).copy()
  ends[:-1] |= np.any(next_observations[:-1] != observations[1:], axis=-1)
  ends[-1] = True
  return ends


def discounted_returns_to_go(rewards: np.ndarray, dones: np.ndarray, ends: np.ndarray,
                             discount: float) -> tuple[np.ndarray, np.ndarray]:
  """(G [N], complete [N]): G_t = r_t + gamma r_{t+1} + ... to the episode's end, and whether
  G_t is the whole return: its episode terminated, or its end is far enough that the missing
  tail weighs under 1% (a time limit cut it)."""
  returns = np.zeros(len(rewards), np.float64)
  steps_to_end = np.zeros(len(rewards), np.int64)
  terminated = np.zeros(len(rewards), bool)
  following, following_steps, following_terminated = 0.0, 0, False
  for row in range(len(rewards) - 1, -1, -1):
    if ends[row]:
      following, following_steps, following_terminated = 0.0, 0, bool(dones[row])
    following = rewards[row] + discount * following
    following_steps += 1
    returns[row], steps_to_end[row], terminated[row] = following, following_steps, following_terminated
  horizon = np.log(TRUNCATION_HORIZON_EPSILON) / np.log(discount) if discount < 1.0 else np.inf
  return returns, terminated | (steps_to_end >= horizon)


def evaluation_rows(complete: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
  """Up to `count` rows with complete returns, drawn once without replacement, sorted."""
  candidates = np.flatnonzero(complete)
  if len(candidates) <= count:
    return candidates
  return np.sort(np.random.default_rng(seed).choice(candidates, count, replace=False))
