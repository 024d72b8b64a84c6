"""Discounted Monte-Carlo returns of a dataset's episodes, against a direct sum per row."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import episodes_dataset

from bracplus_jax import data, train
from bracplus_jax.data import monte_carlo


def direct_returns(rewards, episode_lengths, discount):
  """G_t = sum_k gamma^k r_{t+k} to the end of t's episode, one row at a time."""
  returns, start = [], 0
  for length in episode_lengths:
    episode = rewards[start:start + length]
    for t in range(length):
      returns.append(sum(discount**k * episode[t + k] for k in range(length - t)))
    start += length
  return np.array(returns)


@pytest.mark.parametrize("use_next_observations", [False, True])
def test_returns_to_go_follow_the_file_s_episodes(d4rl_file, use_next_observations):
  # A terminated episode, a timed-out one (its last row is dropped from the transitions) and
  # a terminated one at the end; rewards scaled into [0, 1] as training sees them.
  lengths, ends = [6, 12, 5], ["terminal", "timeout", "terminal"]
  arrays = episodes_dataset(lengths, ends)
  if use_next_observations:
    arrays["next_observations"] = np.roll(arrays["observations"], -1, axis=0)
  dataset = data.load_dataset("hdf5:" + d4rl_file(**arrays), progress=False)
  transitions = dataset.transitions
  host = {name: np.asarray(getattr(transitions, name))
          for name in ("observations", "next_observations", "dones", "rewards")}
  discount = 0.5
  episode_ends = monte_carlo.episode_ends(host["observations"], host["next_observations"], host["dones"])
  returns, complete = monte_carlo.discounted_returns_to_go(
      host["rewards"], host["dones"], episode_ends, discount)

  # The timeout row is no transition; without next_observations neither is the last row, and
  # the last episode then ends cut, its terminal row gone.
  last = 5 if use_next_observations else 4
  kept_lengths = [6, 11, last]
  np.testing.assert_array_equal(np.flatnonzero(episode_ends), np.cumsum(kept_lengths) - 1)
  np.testing.assert_allclose(returns, direct_returns(host["rewards"], kept_lengths, discount), rtol=1e-6)
  # Complete: the terminated episodes' rows; in the truncated one, rows at least
  # log(0.01) / log(0.5) = 6.6 steps before its end, i.e. 7 or more steps to go.
  horizon = math.ceil(math.log(0.01) / math.log(discount))
  truncated = np.arange(11)[::-1] + 1 >= horizon  # steps to the end: 11, 10, ..., 1
  last_complete = np.ones(5, bool) if use_next_observations else np.zeros(4, bool)  # 4 < 7 steps
  np.testing.assert_array_equal(complete, np.concatenate([np.ones(6, bool), truncated, last_complete]))


def test_the_critic_check_draws_complete_rows_once(d4rl_file):
  arrays = episodes_dataset([30, 40], ["terminal", "timeout"])
  dataset = data.load_dataset("hdf5:" + d4rl_file(**arrays), progress=False)
  observations, actions, returns = train.critic_check(dataset.transitions, 0.9, num_rows=20)
  assert observations.shape == (20, 3) and actions.shape == (20, 2) and returns.shape == (20,)
  rows = [int(np.flatnonzero((np.asarray(dataset.transitions.observations) == o).all(axis=1))[0])
          for o in np.asarray(observations)]
  assert len(set(rows)) == 20  # without replacement
  # The timed-out episode keeps 39 transitions, all within log(0.01) / log(0.9) = 43.7 steps of
  # its cut end: none is complete, so every row comes from the terminated episode.
  assert max(rows) < 30
  expected = direct_returns(np.asarray(dataset.transitions.rewards), [30, 39], 0.9)[rows]
  np.testing.assert_allclose(returns, expected, rtol=1e-5)


def test_the_critic_fit_compares_the_pessimistic_q_with_the_returns():
  from test_alpha import dual_algorithm  # a small BRACPlus: 4-dim states, 1-dim actions

  algorithm = dual_algorithm()
  state = algorithm.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  observations = jnp.asarray(rng.normal(size=(50, 4)), jnp.float32)
  actions = jnp.asarray(rng.uniform(-1, 1, size=(50, 1)), jnp.float32)
  heads = np.asarray(algorithm.critic.apply(state.critic.params, observations, actions))  # [2, 50]
  returns = heads.min(axis=0) * 2.0 + rng.normal(size=50)
  metrics = algorithm.critic_fit(state, observations, actions, jnp.asarray(returns, jnp.float32))
  pessimistic = heads.min(axis=0)
  assert float(metrics["q_mc_correlation"]) == pytest.approx(np.corrcoef(pessimistic, returns)[0, 1], abs=1e-5)
  assert float(metrics["q_mc_mean_error"]) == pytest.approx(np.mean(pessimistic - returns), abs=1e-5)


def test_without_a_complete_return_there_is_no_critic_check(d4rl_file):
  # Two short timed-out episodes: no row is 459 steps (log 0.01 / log 0.99) from its cut end.
  arrays = episodes_dataset([10, 12], ["timeout", "timeout"])
  dataset = data.load_dataset("hdf5:" + d4rl_file(**arrays), progress=False)
  assert train.critic_check(dataset.transitions, 0.99) is None


def test_the_critic_fit_of_constant_returns_reports_no_correlation():
  from test_alpha import dual_algorithm

  algorithm = dual_algorithm()
  state = algorithm.init(jax.random.key(0))
  observations = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
  metrics = algorithm.critic_fit(state, observations, jnp.zeros((8, 1)), jnp.full((8,), 3.0))
  assert float(metrics["q_mc_correlation"]) == 0.0 and np.isfinite(float(metrics["q_mc_mean_error"]))
