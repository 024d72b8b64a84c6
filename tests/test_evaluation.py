"""Vectorised evaluation against plain one-env rollouts and a numpy best-of-Q."""

import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bracplus_jax import evaluation, networks
from bracplus_jax.data import RewardScale
from bracplus_jax.errors import InputError

ENV_ID = "Hopper-v5"
OBS_DIM, ACT_DIM = 11, 3
SEED = 7


def init_over_seeds(module, key, num_seeds, *inputs):
  """Parameters with a leading seed axis; one compile, not one per eager op."""
  return jax.jit(jax.vmap(lambda k: module.init(k, *inputs)))(jax.random.split(key, num_seeds))


def seed_slice(params, seed_index):
  return jax.tree.map(lambda x: np.asarray(x)[seed_index], params)


@pytest.fixture(scope="module")
def policy():
  return networks.TanhGaussianPolicy(ACT_DIM, (32, 32))


@pytest.fixture(scope="module")
def policy_params(policy):
  return init_over_seeds(policy, jax.random.key(0), 2, jnp.zeros((1, OBS_DIM)))


@pytest.fixture(scope="module")
def one_observation_action(policy):
  return jax.jit(lambda params, observation: jnp.tanh(policy.apply(params, observation)[0]))


def one_env_episode(act, params, reset_seed, max_episode_steps, discount=0.99, scale=lambda r: r):
  """(return, length, discounted return of scale(r), first observation) of one episode with
  tanh(mean) computed one observation at a time."""
  env = gym.make(ENV_ID, max_episode_steps=max_episode_steps)
  observation, _ = env.reset(seed=reset_seed)
  first = observation
  total, discounted, length, done = 0.0, 0.0, 0, False
  while not done:
    observation, reward, terminated, truncated, _ = env.step(
        np.asarray(act(params, np.asarray(observation, np.float32))))
    discounted += discount**length * scale(reward)
    total, length, done = total + reward, length + 1, terminated or truncated
  env.close()
  return total, length, discounted, first


@pytest.mark.parametrize("max_episode_steps", [None, 50])
def test_returns_and_lengths_match_one_env_rollouts(policy, policy_params, one_observation_action,
                                                    max_episode_steps):
  episodes = 2
  result = evaluation.evaluate_episodes(
      policy, policy_params, ENV_ID, episodes, SEED, max_episode_steps=max_episode_steps)
  expected = np.zeros((2, episodes, 2))
  for seed_index in range(2):
    params = seed_slice(policy_params, seed_index)
    for episode in range(episodes):
      expected[seed_index, episode] = one_env_episode(
          one_observation_action, params, SEED + seed_index * episodes + episode, max_episode_steps)[:2]
  np.testing.assert_array_equal(result.lengths, expected[..., 1])
  np.testing.assert_allclose(result.returns, expected[..., 0], rtol=1e-5)
  # Episodes of different lengths side by side: the short ones were autoreset
  # and kept stepping, and nothing after their end was counted.
  assert len(np.unique(result.lengths)) > 1
  limit = max_episode_steps or 1000
  assert result.lengths.max() <= limit
  if max_episode_steps is not None:
    assert result.lengths.max() == limit and result.lengths.min() < limit  # truncated and terminated


def test_discounted_training_returns_and_first_steps_match_one_env_rollouts(
    policy, policy_params, one_observation_action):
  # The critic's units: rewards through the dataset's scale, discounted from the first step.
  scale = RewardScale(low=-1.0, high=4.0)
  result = evaluation.evaluate_episodes(policy, policy_params, ENV_ID, 2, SEED, max_episode_steps=30,
                                        discount=0.9, reward_scale=scale)
  for seed_index in range(2):
    params = seed_slice(policy_params, seed_index)
    for episode in range(2):
      _, _, discounted, first = one_env_episode(
          one_observation_action, params, SEED + seed_index * 2 + episode, 30, 0.9,
          lambda r: (r + 1.0) / 5.0)
      assert result.discounted_returns[seed_index, episode] == pytest.approx(discounted, rel=1e-5)
      np.testing.assert_allclose(result.initial_observations[seed_index, episode], first, rtol=1e-6)
      np.testing.assert_allclose(result.initial_actions[seed_index, episode],
                                 one_observation_action(params, np.asarray(first, np.float32)), rtol=1e-5)


def test_evaluate_returns_the_episode_returns(policy, policy_params):
  returns = evaluation.evaluate(policy, policy_params, ENV_ID, 2, SEED, max_episode_steps=20)
  result = evaluation.evaluate_episodes(policy, policy_params, ENV_ID, 2, SEED, max_episode_steps=20)
  assert returns.shape == (2, 2)
  np.testing.assert_array_equal(returns, result.returns)


def numpy_mlp(layers, x):
  """ReLU MLP over Flax Dense parameters {'Dense_0': {'kernel', 'bias'}, ...}."""
  for index in range(len(layers)):
    layer = layers[f"Dense_{index}"]
    x = x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
    if index < len(layers) - 1:
      x = np.maximum(x, 0.0)
  return x


@pytest.fixture(scope="module")
def critic():
  return networks.TwinCritic((16, 16))


@pytest.fixture(scope="module")
def critic_params(critic):
  return init_over_seeds(critic, jax.random.key(1), 2, jnp.zeros((1, OBS_DIM)), jnp.zeros((1, ACT_DIM)))


def test_best_of_q_takes_the_argmax_of_the_mean_q_over_clipped_samples(
    policy, policy_params, critic, critic_params):
  num_seeds, episodes, num_samples = 2, 4, 20
  observations = np.random.default_rng(0).normal(size=(num_seeds, episodes, OBS_DIM)).astype(np.float32)
  key = jax.random.key(3)
  actions = np.asarray(evaluation.policy_actions(
      policy, policy_params, jnp.asarray(observations), key, "best_of_q", critic, critic_params,
      num_samples))
  assert actions.shape == (num_seeds, episodes, ACT_DIM)
  chosen_indices = []
  for seed_index in range(num_seeds):
    seed_key = jax.random.fold_in(key, seed_index)
    noise = np.asarray(jax.random.normal(seed_key, (num_samples, episodes, ACT_DIM)))
    policy_layers = seed_slice(policy_params, seed_index)["params"]["trunk"]
    mean, log_std = np.split(numpy_mlp(policy_layers, observations[seed_index]), 2, axis=-1)
    std = np.exp(np.clip(log_std, -20.0, 2.0))
    candidates = np.tanh(np.clip(mean + std * noise, mean - std, mean + std))
    heads = seed_slice(critic_params, seed_index)["params"]["heads"]["mlp"]
    mean_q = np.zeros((num_samples, episodes))
    for head in range(2):
      layers = seed_slice(heads, head)
      inputs = np.concatenate([np.broadcast_to(observations[seed_index], (num_samples, episodes, OBS_DIM)),
                               candidates], axis=-1)
      mean_q += numpy_mlp(layers, inputs)[..., 0] / 2
    best = mean_q.argmax(axis=0)
    chosen_indices.extend(best)
    np.testing.assert_allclose(actions[seed_index], candidates[best, np.arange(episodes)], atol=1e-5)
  # The check means something only if the critic's choice is not always the same draw.
  assert len(set(chosen_indices)) > 1


def test_best_of_q_evaluation_runs_every_episode(policy, policy_params, critic, critic_params):
  result = evaluation.evaluate_episodes(policy, policy_params, ENV_ID, 4, SEED, mode="best_of_q",
                                        critic=critic, critic_params=critic_params, max_episode_steps=5)
  assert result.returns.shape == (2, 4) and np.isfinite(result.returns).all()
  assert (result.lengths <= 5).all() and (result.lengths >= 1).all()


def test_deterministic_mode_is_tanh_of_the_mean(policy, policy_params):
  observations = jnp.ones((2, 3, OBS_DIM))
  actions = evaluation.policy_actions(policy, policy_params, observations, jax.random.key(0))
  means = jax.vmap(lambda p, o: policy.apply(p, o)[0])(policy_params, observations)
  np.testing.assert_allclose(actions, np.tanh(means), rtol=1e-6)


def test_unknown_env_id_is_named(policy, policy_params):
  with pytest.raises(InputError, match="NoSuchEnv-v0"):
    evaluation.evaluate(policy, policy_params, "NoSuchEnv-v0", 1, SEED)


def test_mismatched_observation_size_names_both_shapes():
  policy = networks.TanhGaussianPolicy(ACT_DIM, (8,))
  params = init_over_seeds(policy, jax.random.key(0), 1, jnp.zeros((1, 5)))
  with pytest.raises(InputError, match=r"Hopper-v5.*\(11,\).*\(5,\)"):
    evaluation.evaluate(policy, params, ENV_ID, 1, SEED)


def test_mismatched_action_size_names_both_shapes():
  policy = networks.TanhGaussianPolicy(2, (8,))
  params = init_over_seeds(policy, jax.random.key(0), 1, jnp.zeros((1, OBS_DIM)))
  with pytest.raises(InputError, match=r"actions of shape \(3,\).*actions of shape \(2,\)"):
    evaluation.evaluate(policy, params, ENV_ID, 1, SEED)


def test_params_without_a_seed_axis_are_refused(policy, policy_params):
  with pytest.raises(InputError, match="leading seed axis"):
    evaluation.evaluate(policy, seed_slice(policy_params, 0), ENV_ID, 1, SEED)


def test_unknown_mode_and_missing_critic_are_refused(policy, policy_params):
  with pytest.raises(InputError, match="'greedy'"):
    evaluation.evaluate(policy, policy_params, ENV_ID, 1, SEED, mode="greedy")
  with pytest.raises(InputError, match="needs the critic"):
    evaluation.evaluate(policy, policy_params, ENV_ID, 1, SEED, mode="best_of_q")


def test_summary_gives_per_seed_means_and_scores():
  returns = np.array([[10.0, 30.0], [50.0, 70.0]])
  summary = evaluation.summarize(returns, reference_returns=(0.0, 100.0))
  assert summary["return_per_seed"] == [20.0, 60.0]
  assert summary["return_mean"] == 40.0 and summary["return_std"] == 20.0
  assert summary["score_per_seed"] == [20.0, 60.0]
  assert summary["score_mean"] == 40.0 and summary["score_std"] == 20.0
  assert "score_mean" not in evaluation.summarize(returns)


def test_video_path_must_be_mp4_or_gif(policy, policy_params, tmp_path):
  with pytest.raises(InputError, match="must end in .mp4 or .gif"):
    evaluation.record_episode(policy, policy_params, ENV_ID, str(tmp_path / "episode.avi"), SEED)


def test_record_episode_writes_the_first_episode(policy, policy_params, tmp_path, monkeypatch):
  monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))
  steps = 10
  try:
    path = evaluation.record_episode(policy, policy_params, ENV_ID, str(tmp_path / "episode.mp4"), SEED,
                                     max_episode_steps=steps, width=64, height=48)
  except InputError as error:
    if "MUJOCO_GL" not in str(error):
      raise
    pytest.skip(f"no OpenGL backend for MuJoCo here: {error}")
  import imageio.v3 as iio

  frames = iio.imread(path, index=None)
  assert path.endswith(".mp4" if evaluation.mp4_writer_available() else ".gif")
  assert frames.shape[1:3] == (48, 64)
  stride = 1 if path.endswith(".mp4") else int(np.ceil(125 / evaluation.GIF_MAX_FPS))
  assert frames.shape[0] == len(range(0, steps + 1, stride))
