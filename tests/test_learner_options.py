"""The learner's options for the released code's choices, through the real code path: the
entropy constraint's direction and H0, the MMD's scale and behaviour samples, the max
backup's target policy, the start-up learning-rate schedules, and the scalar multipliers."""

import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bracplus_jax.configs import base, door_human, hammer_human, pen_human, relocate_human  # noqa: E402

from bracplus_jax import config as config_lib  # noqa: E402
from bracplus_jax import data, learner, losses, networks, train  # noqa: E402
from bracplus_jax.errors import InputError  # noqa: E402
from conftest import write_d4rl_file  # noqa: E402
from test_learner import ACT, OBS, random_transitions, small_config  # noqa: E402

RELEASED_FACTORS = (1.0, 0.5, 0.1, 0.05, 0.01)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
  rng = np.random.default_rng(0)
  size = 256
  path = write_d4rl_file(
      tmp_path_factory.mktemp("options") / "small.hdf5",
      observations=rng.normal(size=(size, OBS)).astype(np.float32),
      actions=rng.uniform(-0.9, 0.9, size=(size, ACT)).astype(np.float32),
      rewards=rng.uniform(size=size).astype(np.float32),
      terminals=rng.uniform(size=size) < 0.05, timeouts=np.zeros(size, bool))
  return data.load_dataset(f"hdf5:{path}", scale_rewards=False, progress=False)


def first_seed(tree):
  return jax.tree.map(lambda x: x[0], tree)


# ---------------------------------------------------------------------------
# The entropy constraint: H(pi) <= H0 ("max") or H(pi) >= H0 ("min")
# ---------------------------------------------------------------------------


def test_entropy_constraint_defaults_to_max_and_adroit_tasks_use_min():
  assert base.get_config().algo.entropy_constraint == "max"
  assert base.gym_task("hopper", "mixed").algo.entropy_constraint == "max"
  for task in (pen_human, hammer_human, door_human, relocate_human):
    assert task.get_config().algo.entropy_constraint == "min", task.__name__


@pytest.mark.parametrize("constraint, std_scale", [("max", 4.0), ("min", 1.0)])
def test_default_target_entropy_is_the_behaviour_nll_rule_of_the_constraint(constraint, std_scale):
  algorithm = learner.BRACPlus(small_config(entropy_constraint=constraint).algo, OBS, ACT, dataset_size=256)
  state = algorithm.init(jax.random.key(0))
  batch = random_transitions(64)
  state = jax.jit(algorithm.set_target_entropy)(state, batch, jax.random.key(1))
  _, metrics = losses.behavior_loss(state.behavior.params, algorithm.behavior, jax.random.key(1), batch)
  # Released code: H0 = NLL - act_dim ln(std_scale); "max" (gym) 4, "min" (MMD) 1.
  expected = float(metrics["behavior_nll_bound"]) - ACT * math.log(std_scale)
  assert float(state.target_entropy) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("constraint, target_entropy, direction", [
    ("max", 100.0, -1.0), ("max", -100.0, 1.0),  # beta grows while H(pi) > H0
    ("min", 100.0, 1.0), ("min", -100.0, -1.0),  # beta grows while H(pi) < H0
])
def test_initial_policy_step_moves_beta_by_the_constraint_s_violation(constraint, target_entropy, direction):
  algorithm = learner.BRACPlus(small_config(entropy_constraint=constraint).algo, OBS, ACT, dataset_size=256)
  state = algorithm.init(jax.random.key(0)).replace(target_entropy=jnp.asarray(target_entropy))
  new_state, metrics = jax.jit(algorithm.policy_init_step)(state, random_transitions(32), jax.random.key(1))
  beta = float(state.entropy.apply_fn(state.entropy.params))
  new_beta = float(new_state.entropy.apply_fn(new_state.entropy.params))
  assert np.sign(new_beta - beta) == direction
  assert float(metrics["beta"]) == pytest.approx(beta, rel=1e-6)


@pytest.mark.parametrize("constraint, direction", [("max", -1.0), ("min", 1.0)])
def test_a_large_beta_moves_the_policy_s_entropy_in_the_constraint_s_direction(constraint, direction):
  # beta held at 100 (no dual step): the entropy term outweighs the KL's pull on the policy's std.
  config = small_config(entropy_constraint=constraint, entropy_init=100.0, entropy_lr=0.0,
                        policy_init_lr=3e-3)
  algorithm = learner.BRACPlus(config.algo, OBS, ACT, dataset_size=256)
  state = algorithm.init(jax.random.key(0)).replace(target_entropy=jnp.asarray(0.0))
  transitions = random_transitions()
  new_state, _ = jax.jit(learner.scan_steps(algorithm.policy_init_step, 20, 32))(
      state, transitions, jax.random.key(1))

  def entropy(policy_params):  # -E[log pi(a|s)] of the squashed policy, 64 draws per state
    *_, log_prob, _, _ = algorithm._policy_samples(
        policy_params, transitions.observations, jax.random.key(2), 64)
    return -float(jnp.mean(log_prob))

  change = entropy(new_state.policy.params) - entropy(state.policy.params)
  assert np.sign(change) == direction and abs(change) > 0.1


# ---------------------------------------------------------------------------
# The MMD: its scale and its behaviour samples
# ---------------------------------------------------------------------------


def numpy_mmd_squared(x, y, sigma):
  def mean_kernel(a, b):
    return np.mean(np.exp(-np.abs(a[:, None, :] - b[None, :, :]).sum(-1) / (2 * sigma)))

  return mean_kernel(x, x) - 2 * mean_kernel(x, y) + mean_kernel(y, y)


@pytest.mark.parametrize("scale", ["root", "squared"])
def test_the_learner_s_mmd_matches_numpy_on_the_same_samples(scale):
  config = small_config(divergence="mmd", mmd_scale=scale, mmd_sigma=1.0)
  algorithm = learner.BRACPlus(config.algo, OBS, ACT, dataset_size=256)
  state = algorithm.init(jax.random.key(0))
  observations = random_transitions(6).observations
  _, pre_tanh, _, mean, std = algorithm._policy_samples(
      state.policy.params, observations, jax.random.key(1), algorithm.num_policy_samples)
  key = jax.random.key(2)
  divergence = jax.jit(algorithm.divergence)(state.behavior.params, observations, mean, std, pre_tanh, key)
  behavior_samples = np.asarray(algorithm.behavior_samples(state.behavior.params, observations, key))
  policy_samples = np.swapaxes(np.asarray(pre_tanh), 0, 1)
  assert behavior_samples.shape == policy_samples.shape == (6, config.algo.mmd_samples, ACT)
  squared = np.array([numpy_mmd_squared(policy_samples[i], behavior_samples[i], 1.0) for i in range(6)])
  expected = np.sqrt(squared + 1e-6) if scale == "root" else squared
  np.testing.assert_allclose(divergence, expected, rtol=1e-4, atol=1e-6)


def test_mmd_defaults_are_the_root_and_the_model_s_samples():
  algo = base.get_config().algo
  assert algo.mmd_scale == "root" and algo.mmd_behavior_samples == "sampled"


def test_a_run_saved_before_the_mmd_and_schedule_options_keeps_what_it_ran():
  algo = small_config(divergence="mmd").algo
  for field in ("mmd_scale", "mmd_behavior_samples", "startup_lr_schedule"):
    del algo[field]  # an older run's config.json
  algorithm = learner.BRACPlus(algo, OBS, ACT, dataset_size=256)
  assert algorithm.mmd_squared and algorithm.mmd_behavior_samples == "sampled"
  assert algorithm.learning_rates["behavior"] == algo.behavior_lr


def test_released_behavior_samples_are_the_decoder_s_means_at_clipped_latents():
  config = small_config(divergence="mmd", mmd_behavior_samples="released", behavior_ensemble_size=1)
  algorithm = learner.BRACPlus(config.algo, OBS, ACT, dataset_size=256)
  state = algorithm.init(jax.random.key(0))
  observations = random_transitions(5).observations
  key = jax.random.key(3)
  samples = algorithm.behavior_samples(state.behavior.params, observations, key)
  # One member, so the member draw is moot; the latents are the standard normal draws of
  # the sample key's latent half, clipped to +-0.5.
  _, sample_key = jax.random.split(key)
  latent_key, _ = jax.random.split(sample_key)
  num_samples, latent_dim = config.algo.mmd_samples, algorithm.behavior.latent_dim
  latents = jnp.clip(jax.random.normal(latent_key, (5, num_samples, latent_dim)), -0.5, 0.5)
  repeated = jnp.broadcast_to(observations[:, None, :], (5, num_samples, OBS))
  member = networks.member_variables(state.behavior.params, 0)
  decoder_mean, _ = algorithm.behavior.member().apply(member, repeated, latents, method="decode")
  np.testing.assert_allclose(samples, decoder_mean, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# The max backup's target policy
# ---------------------------------------------------------------------------


def test_the_max_backup_s_target_policy_is_the_initial_policy_once_its_phase_ends(small_dataset):
  config = small_config(td_backup="max")
  config.behavior_steps, config.policy_init_steps, config.critic_init_steps = 10, 10, 0
  config.batch_size, config.epochs = 32, 0
  trainer = train.Trainer(config, small_dataset, progress=False)
  state, keys = trainer.initial()
  for unit in range(train.STAGES.index("policy_init") + 1):
    state, keys, _ = trainer.run_unit(unit, state, keys)
  # Until then the target is the random initialisation, which the policy has left.
  assert not all(np.allclose(t, p) for t, p in zip(
      jax.tree.leaves(state.policy_target_params), jax.tree.leaves(state.policy.params)))
  state, keys, _ = trainer.run_unit(train.STAGES.index("kl_threshold"), state, keys)
  for target, policy in zip(jax.tree.leaves(state.policy_target_params), jax.tree.leaves(state.policy.params)):
    np.testing.assert_array_equal(target, policy)


# ---------------------------------------------------------------------------
# Start-up learning rates
# ---------------------------------------------------------------------------


def applied_learning_rates(train_state, num_steps):
  """Each step's change of one parameter under a constant unit gradient. Adam's step is then
  lr x m_hat / (sqrt(v_hat) + eps) = lr / (1 + 1e-8): the learning rate the optimiser applies."""
  gradients = jax.tree.map(jnp.ones_like, train_state.params)

  def first_parameter(state):
    return jax.tree.leaves(state.params)[0].ravel()[0]

  def step(state, _):
    new_state = state.apply_gradients(grads=gradients)
    return new_state, first_parameter(state) - first_parameter(new_state)

  _, rates = jax.jit(lambda s: jax.lax.scan(step, s, None, length=num_steps))(train_state)
  return np.asarray(rates)


def released_rates(base_rate, phase_steps, num_steps):
  """base_rate x the factor of each step's fifth of the phase, and the last factor after it."""
  return np.array([base_rate * RELEASED_FACTORS[min(4, 5 * step // phase_steps)] for step in range(num_steps)])


def test_released_start_up_rates_step_down_over_fifths_of_each_phase(small_dataset):
  config = small_config(startup_lr_schedule="released", behavior_lr=1.0, policy_init_lr=0.5)
  config.behavior_steps, config.policy_init_steps = 50, 100
  trainer = train.Trainer(config, small_dataset, progress=False)
  state = first_seed(trainer.initial()[0])

  behavior = applied_learning_rates(state.behavior, 60)  # 10 more: the VAEs' steps during RL
  np.testing.assert_allclose(behavior, released_rates(1.0, 50, 60), rtol=1e-3)
  policy = applied_learning_rates(state.policy, 100)
  np.testing.assert_allclose(policy, released_rates(0.5, 100, 100), rtol=1e-3)
  # Mid-phase (step 50 of 100, the third fifth): a tenth of the base rate.
  assert policy[50] == pytest.approx(0.05, rel=1e-3)
  assert policy[19] == pytest.approx(0.5, rel=1e-3) and policy[20] == pytest.approx(0.25, rel=1e-3)
  # The RL policy rate stays constant.
  rl_policy = applied_learning_rates(trainer.algorithm.start_rl(state).policy, 5)
  np.testing.assert_allclose(rl_policy, config.algo.policy_lr, rtol=1e-3)


def test_constant_start_up_rates_are_the_default_and_need_no_step_counts():
  config = small_config(behavior_lr=1.0, policy_init_lr=0.5)
  assert config.algo.startup_lr_schedule == "constant"
  state = learner.BRACPlus(config.algo, OBS, ACT, dataset_size=256).init(jax.random.key(0))
  np.testing.assert_allclose(applied_learning_rates(state.behavior, 20), 1.0, rtol=1e-3)
  np.testing.assert_allclose(applied_learning_rates(state.policy, 20), 0.5, rtol=1e-3)
  with pytest.raises(ValueError, match="step count"):
    learner.BRACPlus(small_config(startup_lr_schedule="released").algo, OBS, ACT, dataset_size=256)


def test_released_schedule_of_a_phase_shorter_than_five_steps_still_ends_at_a_hundredth():
  schedule = learner.released_startup_schedule(1.0, 3)  # boundaries 0, 1, 1, 2
  np.testing.assert_allclose([schedule(step) for step in range(4)], [0.5, 0.05, 0.01, 0.01], rtol=1e-6)


# ---------------------------------------------------------------------------
# The scalar multipliers: beta's and the GP weight's bounds, beta's restart at the RL switch
# ---------------------------------------------------------------------------


def test_beta_and_the_gp_weight_are_capped_like_the_released_code_s_multipliers():
  algorithm = learner.BRACPlus(small_config(gp_lambda=0.2).algo, OBS, ACT, dataset_size=256)
  assert algorithm.entropy.maximum == 1e4 and algorithm.entropy.minimum is None
  assert algorithm.gp_scale.maximum == 1e4 and algorithm.gp_scale.minimum == 0.2


def test_start_rl_restarts_beta_s_optimiser_and_keeps_beta():
  algorithm = learner.BRACPlus(small_config().algo, OBS, ACT, dataset_size=256)
  state = algorithm.init(jax.random.key(0)).replace(target_entropy=jnp.asarray(-1.0))
  state, _ = jax.jit(learner.scan_steps(algorithm.policy_init_step, 3, 16))(
      state, random_transitions(), jax.random.key(1))
  assert int(state.entropy.step) == 3
  assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(state.entropy.opt_state))

  started = algorithm.start_rl(state)
  np.testing.assert_array_equal(started.entropy.params["params"]["raw"], state.entropy.params["params"]["raw"])
  assert int(started.entropy.step) == 0
  fresh = algorithm.optimizers["entropy"].init(state.entropy.params)
  assert jax.tree.structure(started.entropy.opt_state) == jax.tree.structure(fresh)
  for leaf, fresh_leaf in zip(jax.tree.leaves(started.entropy.opt_state), jax.tree.leaves(fresh)):
    np.testing.assert_array_equal(leaf, fresh_leaf)


@pytest.mark.parametrize("field, value, fragment", [
    ("entropy_constraint", "upper", "config.algo.entropy_constraint = 'upper'; expected one of max, min"),
    ("mmd_scale", "linear", "expected one of root, squared"),
    ("mmd_behavior_samples", "mean", "expected one of sampled, released"),
    ("startup_lr_schedule", "cosine", "expected one of constant, released"),
])
def test_config_validation_names_the_new_options(field, value, fragment):
  config = base.get_config()
  config.algo[field] = value
  with pytest.raises(InputError) as error:
    config_lib.validate(config)
  assert fragment in str(error.value)
