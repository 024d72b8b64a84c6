"""SAC's objectives against direct numpy computations, its env loop against the simulator, and a short run that learns."""

import functools
import json
import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bracplus_jax import networks
from bracplus_jax.collection import sac
from bracplus_jax.data.transitions import Transitions

OBS_DIM, ACT_DIM, BATCH = 5, 2, 7
# Saved by bracplus_jax.sac before it moved into bracplus_jax/collection/ (tests/fixtures/make_old_run.py).
OLD_POLICY_FILE = os.path.join(os.path.dirname(__file__), "fixtures", "old_run", "sac_policy.msgpack")


def numpy_mlp(layers, x):
  names = sorted(layers, key=lambda name: int(name.split("_")[1]))
  for index, name in enumerate(names):
    x = x @ np.asarray(layers[name]["kernel"], np.float64) + np.asarray(layers[name]["bias"], np.float64)
    if index < len(names) - 1:
      x = np.maximum(x, 0.0)
  return x


def random_params(module, *inputs, seed=0, scale=0.3):
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
  return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, scale, leaf.shape), leaf.dtype), shapes)


def test_td_target_against_numpy():
  rng = np.random.default_rng(0)
  next_q = rng.normal(size=(2, BATCH)).astype(np.float32)
  next_log_prob = rng.normal(size=BATCH).astype(np.float32)
  rewards = rng.normal(size=BATCH).astype(np.float32)
  terminals = (rng.uniform(size=BATCH) < 0.4).astype(np.float32)
  temperature, discount = 0.3, 0.9
  expected = rewards + discount * (1.0 - terminals) * (np.minimum(next_q[0], next_q[1]) - temperature * next_log_prob)
  got = sac.td_target(jnp.asarray(next_q), jnp.asarray(next_log_prob), jnp.asarray(rewards),
                      jnp.asarray(terminals), jnp.float32(temperature), discount)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entropy, target, direction", [(1.5, -2.0, -1), (-3.0, -2.0, +1)])
def test_temperature_step_moves_against_the_entropy_gap(entropy, target, direction):
  """dJ/dalpha = H - H_target (Eq. 18): too random lowers alpha, too certain raises it."""
  log_prob = jnp.asarray(np.random.default_rng(1).normal(-entropy, 0.5, size=64), jnp.float32)
  estimated_entropy = -float(np.mean(np.asarray(log_prob)))
  gradient = jax.grad(lambda alpha: sac.temperature_loss(alpha, log_prob, target)[0])(jnp.float32(0.7))
  np.testing.assert_allclose(gradient, estimated_entropy - target, rtol=1e-5)

  module = networks.LagrangeMultiplier(1.0)
  params = module.init(jax.random.PRNGKey(0))
  optimiser = optax.adam(3e-4)
  grads = jax.grad(lambda p: sac.temperature_loss(module.apply(p), log_prob, target)[0])(params)
  updates, _ = optimiser.update(grads, optimiser.init(params))
  moved = float(module.apply(optax.apply_updates(params, updates))) - float(module.apply(params))
  assert np.sign(moved) == direction


def test_actor_loss_against_numpy():
  policy = sac.policy_module(ACT_DIM, (16, 16))
  critic = networks.TwinCritic((16, 16))
  observations = jnp.asarray(np.random.default_rng(2).normal(size=(BATCH, OBS_DIM)), jnp.float32)
  actions = jnp.zeros((BATCH, ACT_DIM), jnp.float32)
  policy_params = random_params(policy, observations, seed=3, scale=0.15)
  critic_params = random_params(critic, observations, actions, seed=4)
  key, temperature = jax.random.PRNGKey(5), 0.4

  loss, _ = sac.actor_loss(policy_params, policy.apply, lambda s, a: critic.apply(critic_params, s, a),
                           observations, jnp.float32(temperature), key)

  obs = np.asarray(observations, np.float64)
  outputs = numpy_mlp(policy_params["params"]["trunk"], obs)
  mean, log_std = outputs[:, :ACT_DIM], np.clip(outputs[:, ACT_DIM:], -20.0, 2.0)
  std = np.exp(log_std)
  noise = np.asarray(jax.random.normal(key, (BATCH, ACT_DIM)), np.float64)  # the draw the policy makes
  pre_tanh = mean + std * noise
  action = np.tanh(pre_tanh)
  gaussian = -0.5 * noise**2 - log_std - 0.5 * np.log(2 * np.pi)
  log_prob = np.sum(gaussian - np.log(1.0 - action**2), axis=-1)
  heads = critic_params["params"]["heads"]["mlp"]
  q = [numpy_mlp(jax.tree.map(lambda x, j=j: x[j], heads), np.concatenate([obs, action], -1))[:, 0]
       for j in range(2)]
  expected = np.mean(temperature * log_prob - np.minimum(q[0], q[1]))
  np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-5)


def small_batch(seed=0):
  rng = np.random.default_rng(seed)
  return Transitions(
      observations=jnp.asarray(rng.normal(size=(BATCH, OBS_DIM)), jnp.float32),
      actions=jnp.asarray(rng.uniform(-1, 1, size=(BATCH, ACT_DIM)), jnp.float32),
      rewards=jnp.asarray(rng.normal(size=BATCH), jnp.float32),
      next_observations=jnp.asarray(rng.normal(size=(BATCH, OBS_DIM)), jnp.float32),
      dones=jnp.asarray(rng.uniform(size=BATCH) < 0.3, jnp.float32),
  )


def test_update_moves_the_target_by_polyak_and_every_network():
  config = sac.SACConfig(hidden_dims=(16, 16), tau=0.1)
  state = sac.init_state(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, config)
  old = jax.tree.map(np.asarray, state)
  update = jax.jit(functools.partial(sac.update, discount=0.99, tau=0.1, target_entropy=-float(ACT_DIM)))
  new, metrics = update(state, small_batch(), jax.random.PRNGKey(1))
  jax.tree.map(lambda target, online, previous: np.testing.assert_allclose(
      target, 0.1 * online + 0.9 * previous, rtol=1e-5, atol=1e-7),
      new.target_critic_params, new.critic.params, old.target_critic_params)
  for name in ("policy", "critic", "temperature"):
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), getattr(new, name).params,
                           getattr(old, name).params)
    assert all(jax.tree.leaves(changed)), name
  assert all(np.isfinite(float(value)) for value in metrics.values())


def test_replay_batches_stop_the_bootstrap_only_at_terminals():
  buffer = sac.ReplayBuffer(4, OBS_DIM, ACT_DIM)
  buffer.add({"observations": np.zeros((4, OBS_DIM)), "actions": np.zeros((4, ACT_DIM)),
              "rewards": np.arange(4.0), "terminals": np.array([0, 1, 0, 0], bool),
              "timeouts": np.array([0, 0, 1, 0], bool), "next_observations": np.zeros((4, OBS_DIM)),
              "env_index": np.zeros(4)})
  batch = buffer.sample(np.random.default_rng(0), (64,))
  np.testing.assert_array_equal(batch.dones, (batch.rewards == 1.0).astype(np.float32))


def test_vector_env_loop_stores_only_real_transitions():
  """Next-step autoreset: the reset step is no row; terminated and truncated rows replay exactly."""
  envs = gym.vector.SyncVectorEnv([lambda: gym.make("Hopper-v5", max_episode_steps=15)] * 2,
                                  autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
  buffer = sac.buffer_for(envs, 402)
  collector = sac.Collector(envs, seed=0)
  finished = collector.collect(buffer, 250, sac.random_batch_policy(envs.single_action_space, 0))
  finished += collector.collect(buffer, 150, sac.random_batch_policy(envs.single_action_space, 1))
  envs.close()
  assert 400 <= buffer.size <= 401 and len(finished) == (buffer.rows()["terminals"] | buffer.rows()["timeouts"]).sum()
  rows = buffer.rows()
  assert rows["timeouts"].any() and rows["terminals"].any()
  assert not (rows["timeouts"] & rows["terminals"]).any()

  env = gym.make("Hopper-v5")
  env.reset(seed=0)
  for i in range(buffer.size):
    env.unwrapped.set_state(rows["infos/qpos"][i].astype(np.float64), rows["infos/qvel"][i].astype(np.float64))
    next_observation, reward, terminated, _, _ = env.step(rows["actions"][i])
    np.testing.assert_allclose(next_observation, rows["next_observations"][i], atol=1e-4)
    assert reward == pytest.approx(rows["rewards"][i], abs=1e-4) and terminated == rows["terminals"][i]
  env.close()

  for env_index in (0, 1):
    index = np.flatnonzero(rows["env_index"] == env_index)
    ends = rows["terminals"][index] | rows["timeouts"][index]
    lengths = np.diff(np.concatenate([[-1], np.flatnonzero(ends)]))
    assert lengths.max() <= 15 and (lengths == 15).any()  # the time limit cut some episodes
    inside = np.flatnonzero(~ends[:-1])
    np.testing.assert_array_equal(rows["next_observations"][index[inside]], rows["observations"][index[inside + 1]])
    after_end = index[np.flatnonzero(ends[:-1]) + 1]
    starts = rows["infos/qpos"][after_end]
    assert np.abs(starts[:, 1] - 1.25).max() < 0.01  # each episode after an end begins at a reset pose


def test_checkpoint_round_trip(tmp_path):
  module = sac.policy_module(ACT_DIM, (8, 8))
  observations = jnp.ones((3, OBS_DIM), jnp.float32)
  params = random_params(module, observations, seed=6)
  path = str(tmp_path / "policy.msgpack")
  sac.save_policy(path, sac.PolicyCheckpoint(module, params, "Hopper-v5", OBS_DIM, 1234, 56.5))
  loaded = sac.load_policy(path)
  assert (loaded.module, loaded.env_id, loaded.observation_dim, loaded.step, loaded.evaluated_return) == (
      module, "Hopper-v5", OBS_DIM, 1234, 56.5)
  jax.tree.map(np.testing.assert_array_equal, loaded.params, params)
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(loaded.act(observations, key), np.asarray(
      sac.make_act(module, False)(params, observations, key, 0)))
  (tmp_path / "junk.msgpack").write_bytes(b"\x00not msgpack")
  with pytest.raises(ValueError, match="not a policy checkpoint"):
    sac.load_policy(str(tmp_path / "junk.msgpack"))


def test_a_policy_file_saved_before_the_move_loads_and_saves_back_byte_for_byte(tmp_path):
  checkpoint = sac.load_policy(OLD_POLICY_FILE)
  assert (checkpoint.env_id, checkpoint.observation_dim, checkpoint.step, checkpoint.evaluated_return) == (
      "Hopper-v5", 11, 1000, 12.5)
  assert checkpoint.module == sac.policy_module(3, (8,))
  actions = checkpoint.act(np.zeros((4, 11), np.float32), jax.random.PRNGKey(0))
  assert actions.shape == (4, 3) and np.all(np.abs(actions) <= 1.0)
  sac.save_policy(str(tmp_path / "again.msgpack"), checkpoint)
  with open(OLD_POLICY_FILE, "rb") as old, open(tmp_path / "again.msgpack", "rb") as again:
    assert again.read() == old.read()


def test_sac_learns_inverted_pendulum(tmp_path):
  """The real training loop: from a random policy's ~5 to ~100 in a few thousand steps.

  Across seeds SAC reaches 100-140 within 2,000-4,000 steps and then holds near
  100 (the 100-step horizon of discount 0.99) until ~10,000 steps, when it
  balances for the full 1,000; the bar leaves room for that spread.
  """
  config = sac.SACConfig(total_steps=6_000, hidden_dims=(64, 64), start_steps=1_000, chunk_steps=250,
                         eval_every=1_000, eval_episodes=5, seed=0)
  random_returns = sac.evaluate("InvertedPendulum-v5", sac.random_batch_policy(
      sac.make_env("InvertedPendulum-v5").action_space, 0), 10, 0)
  assert random_returns.mean() < 20.0

  result = sac.train("InvertedPendulum-v5", config, str(tmp_path), thresholds=(50.0, 80.0), progress=False)

  returns = [evaluation.return_mean for evaluation in result.evaluations]
  assert [evaluation.step for evaluation in result.evaluations] == list(range(1_000, 6_001, 1_000))
  assert result.best.return_mean == max(returns) >= 80.0, returns
  crossing = result.crossings[80.0]
  assert crossing.return_mean >= 80.0 and os.path.exists(crossing.checkpoint)
  assert result.crossings[50.0].step <= crossing.step
  policy = sac.load_policy(crossing.checkpoint)
  assert policy.step == crossing.step and policy.evaluated_return == crossing.return_mean
  with open(tmp_path / "run.json") as file:
    record = json.load(file)
  assert record["best"]["return_mean"] == max(returns) and record["config"]["total_steps"] == 6_000
  assert result.buffer.size == 6_000
