"""The state-wise multiplier alpha(s) (Sec. 3.2, Alg. 1 line 8): its dual step against closed
forms, its bounds, and recovery after a long one-sided violation."""

import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bracplus_jax.configs import base  # noqa: E402

from bracplus_jax import learner, losses, networks  # noqa: E402

OBS = 4


def dual_algorithm(dataset_size=None, **algo_overrides):
  config = base.get_config()
  for name in ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims"):
    config.algo[name] = (32, 32)
  # The network's own step (g = 1) unless a test names the gain: "rows" adds the row offsets.
  algo_overrides.setdefault("alpha_dual_gain", "constant")
  for name, value in algo_overrides.items():
    config.algo[name] = value
  return learner.BRACPlus(config.algo, OBS, 1, dataset_size=dataset_size)


def two_class_states(num_states=128, seed=0):
  """Half the states near e_0, half near e_1: the two classes a dual must tell apart."""
  rng = np.random.default_rng(seed)
  classes = np.arange(num_states) % 2
  observations = rng.normal(0.0, 0.1, size=(num_states, OBS))
  observations[np.arange(num_states), classes] += 1.0
  return jnp.asarray(observations, jnp.float32), classes


def run_dual(algorithm, kl_of_alpha, observations, num_steps, kl_threshold=1.0, alpha_state=None):
  """num_steps dual steps where the divergence responds to alpha by kl_of_alpha(alpha, step);
  returns the alpha train state and alpha(s) after every step [steps, N]."""
  state = algorithm.init(jax.random.key(0)).replace(kl_threshold=jnp.asarray(kl_threshold))
  if alpha_state is not None:
    state = state.replace(alpha=alpha_state)

  def body(alpha_state, step):
    current = state.replace(alpha=alpha_state)
    alpha_values = current.alpha.apply_fn(current.alpha.params, observations)
    _, dual_step = algorithm.alpha_dual(current, observations, kl_of_alpha(alpha_values, step))
    alpha_state, _ = dual_step()
    return alpha_state, alpha_state.apply_fn(alpha_state.params, observations)

  return jax.jit(lambda a: jax.lax.scan(body, a, jnp.arange(num_steps)))(state.alpha)


@pytest.mark.parametrize("max_violation", [1.0, 10.0])
def test_the_dual_target_is_the_projected_log_space_step_of_alg_1_line_8(max_violation):
  log_alpha = jnp.log(jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 100.0, 0.01]))
  kl = jnp.array([2.0, 0.5, 1.0, 30.0, 7.0, 30.0, 0.0])
  target = losses.alpha_dual_target(log_alpha, kl, 2.0, 0.1, (math.log(0.01), math.log(100.0)),
                                    max_violation)
  # (KL - 2) / 2 = 0, -0.75, -0.5, 14, 2.5, 14, -1: linear up to the cap
  relative = np.minimum((np.asarray(kl) - 2.0) / 2.0, max_violation)
  expected = np.clip(np.asarray(log_alpha) + 0.1 * relative, math.log(0.01), math.log(100.0))
  np.testing.assert_allclose(target, expected, rtol=1e-6)
  assert expected[5] == pytest.approx(math.log(100.0)) and expected[6] == pytest.approx(math.log(0.01))


@pytest.mark.parametrize("gain", [1.0, 40.0])
def test_the_state_gain_scales_each_state_s_departure_from_the_batch_mean(gain):
  log_alpha = jnp.log(jnp.array([1.0, 2.0, 0.5, 1.0, 3.0]))
  kl = jnp.array([2.0, 0.5, 5.0, 30.0, 1.0])
  bounds = (math.log(1e-3), math.log(1e4))
  target = losses.alpha_dual_target(log_alpha, kl, 2.0, 0.01, bounds, 10.0, gain)
  relative = np.minimum((np.asarray(kl, np.float64) - 2.0) / 2.0, 10.0)  # 0, -0.75, 1.5, 10 (capped), -0.5
  step = relative.mean() + gain * (relative - relative.mean())
  np.testing.assert_allclose(target, np.asarray(log_alpha) + 0.01 * step, rtol=1e-5, atol=1e-6)
  # The part every state shares moves as the plain step's does, whatever the gain.
  plain = losses.alpha_dual_target(log_alpha, kl, 2.0, 0.01, bounds, 10.0)
  assert float(np.mean(target - log_alpha)) == pytest.approx(float(np.mean(plain - log_alpha)), rel=1e-5)
  if gain == 1.0:  # the plain step itself, bit for bit, as a traced (swept) gain too
    expected = np.asarray(log_alpha) + np.float32(0.01) * np.minimum(
        (np.asarray(kl) - np.float32(2.0)) / np.float32(2.0), np.float32(10.0))
    traced = jax.jit(lambda g: losses.alpha_dual_target(log_alpha, kl, 2.0, 0.01, bounds, 10.0, g))(
        jnp.float32(1.0))
    np.testing.assert_array_equal(traced, plain)
    np.testing.assert_allclose(plain, expected, rtol=1e-6)


def test_a_swept_state_gain_takes_the_same_dual_step_as_the_configured_one():
  observations, _ = two_class_states(64)
  kl = jnp.where(jnp.arange(64) % 8 == 0, 9.0, 0.8)  # one state in 8 far over eps_KL = 1
  steps = {}
  for name, algorithm, hyper in (
      ("configured", dual_algorithm(alpha_dual_gain="constant", alpha_dual_state_gain=30.0), None),
      ("swept", learner.BRACPlus(dual_algorithm(alpha_dual_gain="constant").algo, OBS, 1, dataset_size=64,
                                 swept=("alpha_dual_state_gain",)),
       {"alpha_dual_state_gain": 30.0}),
      ("plain", dual_algorithm(alpha_dual_gain="constant", alpha_dual_state_gain=1.0), None)):
    state = algorithm.init(jax.random.key(0), hyper).replace(kl_threshold=jnp.asarray(1.0))
    _, dual_step = algorithm.alpha_dual(state, observations, kl)
    alpha_state, _ = dual_step()
    steps[name] = np.log(np.asarray(alpha_state.apply_fn(alpha_state.params, observations)) / 10.0)
  np.testing.assert_allclose(steps["swept"], steps["configured"], rtol=1e-4, atol=1e-6)
  # The gain widens the gap between the violating states and the rest 30-fold.
  gap = {name: step[::8].mean() - np.delete(step, np.s_[::8]).mean() for name, step in steps.items()}
  assert gap["configured"] == pytest.approx(30.0 * gap["plain"], rel=0.05)


def test_the_tangent_kernel_is_the_jacobian_s_gram_matrix():
  alpha_net = networks.StateAlpha((16, 8), initial=10.0)
  observations = jax.random.normal(jax.random.key(0), (7, OBS))
  params = alpha_net.init(jax.random.key(1), observations)
  # Away from the zero head the start has, so every layer's gradient counts.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape), params)
  kernel = alpha_net.apply(params, observations, method="tangent_kernel")
  jacobian = jax.jacrev(lambda p: alpha_net.apply(p, observations, method="log_alpha"))(params)
  flat = np.concatenate([np.asarray(leaf, np.float64).reshape(7, -1) for leaf in jax.tree.leaves(jacobian)], axis=1)
  np.testing.assert_allclose(kernel, flat @ flat.T, rtol=1e-5, atol=1e-5 * np.abs(flat @ flat.T).max())


def test_the_damped_kernel_solve_is_ridge_regression_in_output_space():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(6, 20))
  kernel = features @ features.T
  residual = rng.normal(size=6)
  weights = learner.damped_kernel_solve(jnp.asarray(kernel), jnp.asarray(residual), 0.1)
  ridge = 0.1 * np.trace(kernel) / 6
  np.testing.assert_allclose(weights, np.linalg.solve(kernel + ridge * np.eye(6), residual), rtol=1e-4)
  # The parameter step features^T w is ridge regression's: argmin ||features x - r||^2 + ridge ||x||^2.
  step = features.T @ np.asarray(weights, np.float64)
  np.testing.assert_allclose(
      step, np.linalg.solve(features.T @ features + ridge * np.eye(20), features.T @ residual), rtol=1e-3)


def test_the_multiplier_figures_split_states_at_eps_kl():
  algorithm = dual_algorithm()
  alpha = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
  kl = jnp.array([0.5, 1.5, 3.0, 0.9, 1.1])
  metrics = algorithm.multiplier_metrics(alpha, kl, 1.0)
  above = np.asarray(kl) > 1.0
  assert float(metrics["alpha_above_threshold"]) == pytest.approx(np.mean(np.asarray(alpha)[above]))
  assert float(metrics["alpha_below_threshold"]) == pytest.approx(np.mean(np.asarray(alpha)[~above]))
  assert float(metrics["kl_above_threshold"]) == pytest.approx(np.mean(np.asarray(kl)[above]))
  assert float(metrics["kl_violation_fraction"]) == pytest.approx(0.6)
  assert float(metrics["kl_violation_fraction_1_2x"]) == pytest.approx(0.4)
  assert float(metrics["kl_over_threshold"]) == pytest.approx(np.mean(np.asarray(kl)))
  assert float(metrics["alpha_geomean_above_1_2x"]) == pytest.approx(math.sqrt(2.0 * 3.0))  # KL 1.5, 3
  assert float(metrics["alpha_geomean_below_threshold"]) == pytest.approx(2.0)  # KL 0.5, 0.9: alpha 1, 4
  none_above = algorithm.multiplier_metrics(alpha, kl * 0.1, 1.0)
  assert float(none_above["alpha_above_threshold"]) == 0.0  # empty set: 0, not NaN


def minority_far_over_the_bound(num_states=2048, seed=0):
  """A fifth of the states far above eps_KL at the start, the rest just under it; the two
  differ in one small feature (0.3 against spread 1 in the others), as states of one task do."""
  rng = np.random.default_rng(seed)
  minority = rng.random(num_states) < 0.2
  observations = rng.normal(0.0, 1.0, size=(num_states, OBS))
  observations[:, 0] = 0.3 * minority + rng.normal(0.0, 0.05, num_states)
  return jnp.asarray(observations, jnp.float32), minority


@pytest.mark.parametrize("fit, gain", [
    ("kernel", "constant"), ("kernel", "rows"),
    pytest.param("line_search", "constant", marks=pytest.mark.xfail(
        strict=True, reason="one gradient step moves every state by about the batch's mean change")),
    ("line_search", "rows")])
def test_alpha_rises_where_a_minority_breaks_the_constraint_without_the_majority_running_off(fit, gain):
  # KL(s) = c_s / alpha(s), c = 50 in the minority (KL 5 eps_KL at the start, alpha = 10) and
  # 9 in the majority (0.9 eps_KL): alpha* = 50 and 9. Batches of 256 from 2,048 states. The
  # row offsets hold it even with the plain gradient step.
  observations, minority = minority_far_over_the_bound()
  c = jnp.where(jnp.asarray(minority), 50.0, 9.0)
  algorithm = dual_algorithm(observations.shape[0], alpha_hidden_dims=(64, 64), alpha_dual_step=0.01,
                             alpha_dual_fit=fit, alpha_dual_gain=gain)
  state = algorithm.init(jax.random.key(0)).replace(kl_threshold=jnp.asarray(1.0))

  def body(alpha_state, key):
    rows = jax.random.randint(key, (256,), 0, observations.shape[0])
    current = state.replace(alpha=alpha_state)
    alpha, dual_step = algorithm.alpha_dual(current, observations[rows], jnp.zeros(256), rows)
    _, dual_step = algorithm.alpha_dual(current, observations[rows], c[rows] / alpha, rows)
    return dual_step()[0], None

  # 3,000 steps: the minority's alpha* is 5x its start, log(5) / eta = 161 steps at full rate.
  alpha_state, _ = jax.jit(lambda a: jax.lax.scan(body, a, jax.random.split(jax.random.key(1), 3000)))(
      state.alpha)
  alpha = np.asarray(algorithm.dataset_alpha(state.replace(alpha=alpha_state), observations))
  kl = np.asarray(c) / alpha
  assert np.mean(kl[minority] > 1.2) <= 0.05  # the minority is back under 1.2 eps_KL
  assert np.median(alpha[~minority]) < 1.5 * 9.0  # the majority's alpha has not run off ...
  assert np.median(kl[~minority]) > 0.8  # ... nor is its KL pressed far under the bound


def test_the_row_offset_step_against_numpy():
  offsets = np.array([0.0, 0.5, -1.0, 2.0, -1.0])
  network = np.log(np.array([1.0, 2.0, 10.0, 50.0, 0.002]))
  kl = np.array([2.0, 0.5, 30.0, 8.0, 0.0])
  bounds = (math.log(1e-3), math.log(100.0))
  new = np.asarray(losses.row_offset_step(*(jnp.asarray(x, jnp.float32) for x in (offsets, network, kl)),
                                          2.0, 0.1, bounds, 10.0), np.float64)
  violation = np.clip((kl - 2.0) / 2.0, -1.0, 10.0)
  expected = np.clip(network + offsets + 0.1 * violation, *bounds) - network
  np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-6)
  assert new[3] == pytest.approx(math.log(100.0) - network[3], rel=1e-5)  # held at the upper bound
  assert new[4] == pytest.approx(math.log(1e-3) - network[4], rel=1e-4)  # and at the lower one


def test_the_rows_dual_step_moves_the_drawn_rows_offsets_and_takes_the_network_s_plain_step():
  observations, _ = two_class_states(64)
  rows = jnp.array([3, 10, 10, 5, 40, 63, 0, 7])
  kl = jnp.array([2.5, 0.2, 0.2, 1.0, 6.0, 0.7, 1.3, 0.05])
  rows_algorithm = dual_algorithm(64, alpha_dual_gain="rows", alpha_dual_step=0.01, alpha_dual_row_step=0.1)
  state = rows_algorithm.init(jax.random.key(0)).replace(kl_threshold=jnp.asarray(1.0))
  offsets = jax.random.normal(jax.random.key(4), (64,))
  state = state.replace(alpha=state.alpha.replace(
      params={**state.alpha.params, "rows": {"log_alpha": offsets}}))
  network_log_alpha = np.asarray(state.alpha.apply_fn(
      {"params": state.alpha.params["params"]}, observations[rows], method="log_alpha"), np.float64)
  values, dual_step = rows_algorithm.alpha_dual(state, observations[rows], kl, rows)
  np.testing.assert_allclose(values, np.exp(network_log_alpha + np.asarray(offsets)[rows]), rtol=1e-5)
  new_alpha, metrics = dual_step()
  new_offsets = np.asarray(new_alpha.params["rows"]["log_alpha"], np.float64)
  violation = np.clip(np.asarray(kl, np.float64) - 1.0, -1.0, 10.0)
  expected = np.asarray(offsets, np.float64).copy()
  expected[np.asarray(rows)] += 0.1 * violation  # far inside the bounds
  np.testing.assert_allclose(new_offsets, expected, rtol=1e-5, atol=1e-6)  # undrawn rows unchanged
  assert float(metrics["alpha_row_offset_std"]) == pytest.approx(float(np.std(np.asarray(offsets))), rel=1e-4)
  # The network's part is the plain step (g = 1) on the same violations.
  plain = dual_algorithm(64, alpha_dual_step=0.01)
  plain_state = plain.init(jax.random.key(0)).replace(kl_threshold=jnp.asarray(1.0))
  plain_alpha, _ = plain.alpha_dual(plain_state, observations[rows], kl)[1]()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               new_alpha.params["params"], plain_alpha.params["params"])
  # The dataset's alpha(s), row by row, carries the offsets.
  dataset_alpha = np.asarray(rows_algorithm.dataset_alpha(state, observations), np.float64)
  every_network = np.asarray(state.alpha.apply_fn({"params": state.alpha.params["params"]}, observations,
                                                  method="log_alpha"), np.float64)
  np.testing.assert_allclose(dataset_alpha, np.exp(every_network + np.asarray(offsets)), rtol=1e-5)


def test_the_rows_gain_refuses_to_run_without_the_data_size_or_the_batch_rows():
  with pytest.raises(ValueError, match="dataset_size"):
    dual_algorithm(alpha_dual_gain="rows")
  algorithm = dual_algorithm(64, alpha_dual_gain="rows")
  state = algorithm.init(jax.random.key(0))
  with pytest.raises(ValueError, match="Transitions.sample"):
    algorithm.alpha_dual(state, two_class_states(8)[0], jnp.ones(8))


def test_alpha_starts_at_its_initial_value_in_every_state_and_stays_inside_its_bounds():
  alpha_net = networks.StateAlpha((16,), initial=10.0, minimum=0.5, maximum=20.0)
  observations = jax.random.normal(jax.random.key(1), (32, OBS))
  params = alpha_net.init(jax.random.key(2), observations)
  np.testing.assert_allclose(alpha_net.apply(params, observations), 10.0, rtol=1e-6)
  pushed = jax.tree.map(lambda p: p + 3.0, params)  # any parameters: the output is projected
  alpha = alpha_net.apply(pushed, observations)
  assert float(alpha.min()) >= 0.5 - 1e-6 and float(alpha.max()) <= 20.0 + 1e-4


@pytest.mark.parametrize("fit", ["kernel", "line_search"])
def test_one_dual_step_moves_the_batch_s_log_alpha_to_its_targets_whatever_the_width(fit):
  # KL = 3 eps_KL everywhere: every target is log alpha + eta (3 - 1) / 1. The tangent-kernel
  # solve moves each state to its target (to first order, less the ridge); the line search
  # meets a uniform change on average. Either way a network four times as wide, or deeper,
  # moves alpha(s) by the same amount.
  observations, _ = two_class_states(64)
  for hidden in ((32, 32), (128, 128, 128)):
    algorithm = dual_algorithm(alpha_hidden_dims=hidden, alpha_dual_step=0.01, alpha_dual_fit=fit)
    _, alpha = run_dual(algorithm, lambda a, step: jnp.full_like(a, 3.0), observations, 1)
    change = np.log(np.asarray(alpha[0]) / 10.0)
    assert change.mean() == pytest.approx(0.02, rel=0.05)
    assert change.min() > 0.01 and change.max() < 0.03


def test_alpha_converges_to_each_class_s_closed_form_multiplier_and_stays_there():
  # KL(s) = c_s / alpha(s): the constraint KL(s) = eps_KL holds at alpha*(s) = c_s / eps_KL,
  # 2 in one class and 40 in the other; alpha starts at 10 in both.
  observations, classes = two_class_states()
  c = jnp.where(jnp.asarray(classes) == 0, 2.0, 40.0)
  algorithm = dual_algorithm(alpha_dual_step=0.01)
  _, alpha = run_dual(algorithm, lambda a, step: c / a, observations, 5000)
  ratio = np.asarray(alpha) / np.where(classes == 0, 2.0, 40.0)
  # Each class's (geometric) mean first, every single state later: the states of one class
  # differ only in small features, which a network fits more slowly.
  for k in (0, 1):
    assert math.exp(np.log(ratio[999, classes == k]).mean()) == pytest.approx(1.0, rel=0.10)
  np.testing.assert_allclose(ratio[3999], 1.0, rtol=0.10)
  assert ratio[1000:].min() > 0.5 and ratio[1000:].max() < 2.0


def test_alpha_recovers_from_a_long_one_sided_violation_within_a_bounded_number_of_steps():
  # 5,000 steps of KL far above eps_KL drive alpha(s) to its upper bound; there it must not
  # wind up: once the divergence falls below eps_KL it is back below 10 (the fixed point of
  # the second phase is alpha* = 1) within log(1e4 / 10) / eta steps, plus a margin.
  observations, _ = two_class_states(64)
  step_size = 0.01
  algorithm = dual_algorithm(alpha_dual_step=step_size, alpha_max=1e4)
  alpha_state, alpha = run_dual(algorithm, lambda a, step: jnp.full_like(a, 50.0), observations, 5000)
  assert float(np.asarray(alpha[-1]).min()) == pytest.approx(1e4, rel=0.02)  # at the bound, no further
  _, alpha = run_dual(algorithm, lambda a, step: 1.0 / a, observations, 3000, alpha_state=alpha_state)
  alpha = np.asarray(alpha)
  bound = int(math.log(1e4 / 10.0) / step_size * 1.2)
  assert alpha[bound].max() < 10.0
  np.testing.assert_allclose(alpha[-1], 1.0, rtol=0.2)


@pytest.mark.parametrize("kind", ["log", "relative"])
def test_the_dual_violation_against_numpy(kind):
  kl = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 100.0, 2.0 / np.e**3])
  threshold, cap = 2.0, 2.0
  violation = np.asarray(losses.dual_violation(jnp.asarray(kl), threshold, kind, cap), np.float64)
  if kind == "log":
    expected = np.clip(np.log(np.maximum(kl, 1e-12 * threshold) / threshold), -cap, cap)
    # Symmetric around eps_KL: twice and half the bound push equally hard, the other way.
    assert violation[4] == pytest.approx(-float(losses.dual_violation(jnp.asarray(1.0), threshold, kind, cap)))
  else:
    expected = np.clip((kl - threshold) / threshold, -1.0, cap)
  np.testing.assert_allclose(violation, expected, rtol=1e-6, atol=1e-6)


def numpy_leverage_gain(kernel, damping, dataset_size):
  """An independent computation of learner.leverage_state_gain: explicit inverse, float64."""
  size = kernel.shape[0]
  centring = np.eye(size) - np.ones((size, size)) / size
  centred = centring @ kernel @ centring
  ridge = damping * np.trace(centred) / size
  leverage = np.diag(centred @ np.linalg.inv(centred + ridge * np.eye(size)))
  exposure = (1.0 / np.clip(leverage, 1.0 / size, 1.0) - 1.0) * size / (size - 1) + size / dataset_size
  return 1.0 / np.clip(exposure, size / dataset_size, 1.0), leverage


def test_the_leverage_gain_against_numpy_and_its_limits():
  rng = np.random.default_rng(0)
  # 40 batch states: 30 copies (with small noise) of 3 directions, 10 states of their own.
  shared = rng.normal(size=(3, 50))
  features = np.concatenate([np.repeat(shared, 10, axis=0) + 0.01 * rng.normal(size=(30, 50)),
                             rng.normal(size=(10, 50))]) + 2.0  # + a direction every state shares
  kernel = features @ features.T
  gain = np.asarray(learner.leverage_state_gain(jnp.asarray(kernel, jnp.float32), 0.01, 4000), np.float64)
  expected, leverage = numpy_leverage_gain(kernel, 0.01, 4000)
  np.testing.assert_allclose(gain, expected, rtol=1e-2)  # float32 against float64
  # Ten states that share a direction have leverage about 1 / 10 each and move at every
  # update (g = 1); a state no other batch state shares has leverage near 1 and a gain
  # near N / B = 100.
  assert np.all((leverage[:30] > 0.07) & (leverage[:30] <= 0.1))  # 1 / 10, less the ridge's share
  assert np.all(gain[:30] == 1.0)
  assert np.all(gain[30:] > 10.0) and np.all(gain[30:] <= 100.0 + 1e-3)


def test_the_accelerators_cholesky_route_to_the_leverage_agrees_with_the_cpu_route():
  rng = np.random.default_rng(2)
  features = rng.normal(size=(24, 40))
  kernel = jnp.asarray(features @ features.T, jnp.float32)
  ridge = jnp.float32(0.5)
  expected = 0.5 * np.diag(np.linalg.inv(features @ features.T + 0.5 * np.eye(24)))
  np.testing.assert_allclose(learner._ridge_unexplained_cholesky(kernel, ridge), expected, rtol=2e-3)
  np.testing.assert_allclose(learner._ridge_unexplained(kernel, ridge), expected, rtol=1e-5)


def test_the_leverage_gain_needs_no_constant_for_the_data_size():
  # The same batch and network: the gain of states no other batch state shares follows N / B,
  # while that of shared states stays 1, whatever N.
  rng = np.random.default_rng(1)
  features = np.concatenate([np.repeat(rng.normal(size=(2, 30)), 8, axis=0), rng.normal(size=(4, 30))])
  kernel = jnp.asarray(features @ features.T, jnp.float32)
  small, large = (np.asarray(learner.leverage_state_gain(kernel, 1e-3, n)) for n in (200, 20_000))
  np.testing.assert_allclose(small[:16], 1.0)
  np.testing.assert_allclose(large[:16], 1.0)
  assert np.all(small[16:] <= 200 / 20 + 1e-3) and np.all(small[16:] > 5.0)
  assert np.all(large[16:] > 2.0 * small[16:])


def numpy_softplus_alpha(params, observations):
  """alpha(s) = softplus(w2 relu(W1 s + b1) + b2) and its parameter gradients, by hand."""
  w1, b1 = params["trunk_0"]["kernel"], params["trunk_0"]["bias"]
  w2, b2 = params["head"]["kernel"][:, 0], params["head"]["bias"][0]
  pre = observations @ w1 + b1
  hidden = np.maximum(pre, 0.0)
  raw = hidden @ w2 + b2 + np.log(np.expm1(10.0))  # + softplus^-1 of the start, alpha_init = 10
  alpha = np.log1p(np.exp(raw))
  d_raw = 1.0 / (1.0 + np.exp(-raw))  # softplus' = sigmoid
  grads = {"head_kernel": (d_raw[:, None] * hidden), "head_bias": d_raw,
           "trunk_kernel": np.einsum("ni,nj->nij", observations, (d_raw[:, None] * w2) * (pre > 0)),
           "trunk_bias": (d_raw[:, None] * w2) * (pre > 0)}
  return alpha, grads


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_paper_s_dual_step_is_one_step_of_alg_1_line_8_on_a_softplus_network(optimizer):
  algorithm = dual_algorithm(alpha_dual_fit="paper", alpha_paper_optimizer=optimizer, alpha_lr=0.01,
                             alpha_hidden_dims=(8,))
  state = algorithm.init(jax.random.key(0)).replace(kl_threshold=jnp.asarray(1.0))
  # Away from the zero head the start has, so every layer's gradient counts.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape), state.alpha.params)
  state = state.replace(alpha=state.alpha.replace(params=params))
  observations, _ = two_class_states(16)
  kl = jnp.linspace(0.2, 3.0, 16)
  alpha, dual_step = algorithm.alpha_dual(state, observations, kl)
  new_alpha = dual_step()[0]
  flat = {"trunk_0": {k: np.asarray(v, np.float64) for k, v in params["params"]["trunk_0"].items()},
          "head": {k: np.asarray(v, np.float64) for k, v in params["params"]["head"].items()}}
  obs = np.asarray(observations, np.float64)
  reference_alpha, grads = numpy_softplus_alpha(flat, obs)
  np.testing.assert_allclose(alpha, reference_alpha, rtol=1e-5)
  # Ascent on E_s[alpha(s) (KL(s) - eps_KL)]: its gradient, then the optimiser's first step.
  violation = np.asarray(kl, np.float64) - 1.0
  ascent = {name: np.tensordot(violation, g, axes=1) / 16 for name, g in grads.items()}
  if optimizer == "sgd":
    step = {name: 0.01 * g for name, g in ascent.items()}
  else:  # Adam's first step: lr g / (|g| + eps) with bias-corrected moments
    step = {name: 0.01 * g / (np.abs(g) + 1e-8) for name, g in ascent.items()}
  flat["trunk_0"]["kernel"] += step["trunk_kernel"]
  flat["trunk_0"]["bias"] += step["trunk_bias"]
  flat["head"]["kernel"][:, 0] += step["head_kernel"]
  flat["head"]["bias"][0] += step["head_bias"]
  expected, _ = numpy_softplus_alpha(flat, obs)
  got = np.asarray(new_alpha.apply_fn(new_alpha.params, observations), np.float64)
  np.testing.assert_allclose(got, expected, rtol=2e-4)
  if optimizer == "sgd":  # alpha(s) rises more where KL(s) > eps_KL than where it is below
    change = got - reference_alpha
    assert change[violation > 0.5].mean() > change[violation < -0.5].mean()
