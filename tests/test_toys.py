"""The appendix toys show what the paper says they show, and the command draws both figures."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bracplus_jax import distributions
from bracplus_jax.errors import InputError
from bracplus_jax.studies import toys

SEEDS = (0, 1, 2)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def regression_toys():
  return [toys.gradient_penalty_toy(jax.random.key(seed)) for seed in SEEDS]


@pytest.fixture(scope="module")
def divergences():
  key = jax.random.key(0)
  return {
      "normal": toys.divergence_curves(key, toys.STANDARD_NORMAL),
      "two_modes": toys.divergence_curves(key, toys.TWO_MODES),
  }


def mean_abs_slope_beyond_generalisation(fit, grid):
  far = np.abs(np.asarray(grid)) > toys.GENERALISATION_BOUND
  return float(np.mean(np.abs(np.asarray(fit.slopes)[far])))


# ---------------------------------------------------------------------------
# App. A, Fig. 4
# ---------------------------------------------------------------------------


def test_ood_inputs_lie_outside_the_training_inputs(regression_toys):
  data = regression_toys[0].data
  assert np.all(np.abs(np.asarray(data.inputs)) <= toys.IN_DISTRIBUTION_BOUND)
  ood = np.abs(np.asarray(data.ood_inputs))
  assert np.all((ood >= toys.IN_DISTRIBUTION_BOUND) & (ood <= toys.OUT_OF_DISTRIBUTION_BOUND))
  assert 0 < np.sum(data.ood_inputs < 0) < data.ood_inputs.shape[0]  # both sides


def test_penalty_flattens_the_fit_beyond_the_data(regression_toys):
  """Measured, seeds 0-2: penalised 0.05, 0.02, 0.02; unpenalised 4.9, 3.9, 4.1."""
  for toy in regression_toys:
    penalised = mean_abs_slope_beyond_generalisation(toy.penalised, toy.grid)
    unpenalised = mean_abs_slope_beyond_generalisation(toy.unpenalised, toy.grid)
    assert penalised < 0.2, (penalised, unpenalised)
    assert unpenalised > 1.5, (penalised, unpenalised)
    assert penalised < 0.05 * unpenalised, (penalised, unpenalised)


def test_both_fits_match_the_training_data(regression_toys):
  """Training MSE near the noise variance 0.25 (measured 0.22-0.26), and the curve near 5 sin(pi x / 2)."""
  for toy in regression_toys:
    inside = np.abs(np.asarray(toy.grid)) <= toys.IN_DISTRIBUTION_BOUND
    truth = np.asarray(toys.true_function(toy.grid))[inside]
    for fit in (toy.penalised, toy.unpenalised):
      assert float(fit.in_distribution_mse) < 2.0 * toys.NOISE_STD**2
      assert np.sqrt(np.mean((np.asarray(fit.predictions)[inside] - truth) ** 2)) < 0.5


def test_slopes_match_finite_differences(regression_toys):
  toy = regression_toys[0]
  grid, spacing = np.asarray(toy.grid), float(toy.grid[1] - toy.grid[0])
  for fit in (toy.penalised, toy.unpenalised):
    finite_differences = np.diff(np.asarray(fit.predictions)) / spacing
    midpoint_slopes = 0.5 * (np.asarray(fit.slopes)[1:] + np.asarray(fit.slopes)[:-1])
    # A ReLU net is piecewise linear: the two agree except across a kink.
    agree = np.isclose(finite_differences, midpoint_slopes, atol=1e-2)
    assert np.mean(agree) > 0.9, np.mean(agree)
  assert grid[0] == -toys.OUT_OF_DISTRIBUTION_BOUND and grid[-1] == toys.OUT_OF_DISTRIBUTION_BOUND


def test_penalty_term_is_lambda_times_mean_squared_slope_at_ood_inputs(regression_toys):
  """The critic machinery, given x as the action and no observation, computes App. A's loss."""
  data = regression_toys[0].data

  @jax.jit
  def by_hand_and_by_the_toy(key):
    model = toys.regression_model()
    params = model.init(key, data.inputs)
    slopes = jax.vmap(jax.grad(lambda x: model.apply(params, x)[0]))(data.ood_inputs)[:, 0]
    mse = jnp.mean((model.apply(params, data.inputs)[:, 0] - data.targets) ** 2)
    loss, metrics = toys.regression_loss(params, data, 0.1)
    return (mse + 0.1 * jnp.mean(slopes**2), 0.1 * jnp.mean(slopes**2)), (loss, metrics["gradient_penalty"])

  expected, actual = by_hand_and_by_the_toy(jax.random.key(5))
  np.testing.assert_allclose(actual, expected, rtol=1e-5)
  assert expected[1] > 1e-3  # a penalty worth checking


# ---------------------------------------------------------------------------
# App. B, Fig. 5
# ---------------------------------------------------------------------------


def minima_locations(curves, name):
  return np.asarray(curves.policy_means)[toys.local_minima(getattr(curves, name))]


def test_every_divergence_has_one_minimum_at_the_mean_of_a_gaussian(divergences):
  for name in ("forward_kl", "backward_kl", "mmd"):
    np.testing.assert_allclose(minima_locations(divergences["normal"], name), [0.0], atol=1e-6, err_msg=name)


def test_forward_kl_has_a_minimum_at_each_mode(divergences):
  """KL(pi_x || pi_b), the paper's forward KL, seeks modes: minima at -1.5 and 1."""
  np.testing.assert_allclose(minima_locations(divergences["two_modes"], "forward_kl"), [-1.5, 1.0], atol=0.15)


def test_backward_kl_and_mmd_have_one_minimum_between_the_modes(divergences):
  """Backward KL: at the mixture mean 0.25. MMD (wide kernel): near the median, 0.6-0.8 over 20 seeds."""
  backward_kl = minima_locations(divergences["two_modes"], "backward_kl")
  mmd = minima_locations(divergences["two_modes"], "mmd")
  assert len(backward_kl) == 1 and len(mmd) == 1, (backward_kl, mmd)
  assert abs(backward_kl[0] - 0.25) <= 0.1, backward_kl
  assert -1.5 + 0.1 < mmd[0] < 1.0 - 0.1, mmd


def test_closed_form_kl_matches_quadrature():
  policy_means = jnp.linspace(-10.0, 10.0, 41)

  @jax.jit
  def closed_form(policy_means):
    policy = (policy_means[:, None], jnp.full((41, 1), toys.POLICY_STD))
    standard_normal = (jnp.zeros((41, 1)), jnp.ones((41, 1)))
    return distributions.gaussian_kl(*policy, *standard_normal), distributions.gaussian_kl(*standard_normal, *policy)

  forward, backward = closed_form(policy_means)
  np.testing.assert_allclose(toys.forward_kl_by_quadrature(toys.STANDARD_NORMAL, policy_means), forward, rtol=1e-4)
  np.testing.assert_allclose(toys.backward_kl_by_quadrature(toys.STANDARD_NORMAL, policy_means), backward, rtol=1e-4)


def test_mixture_density_integrates_to_one_and_samples_follow_the_weights():
  points = toys.quadrature_points()
  total = jax.scipy.integrate.trapezoid(toys.behavior_density(toys.TWO_MODES, points), points)
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)
  samples = np.asarray(jax.jit(toys.TWO_MODES.sample, static_argnums=1)(jax.random.key(0), 1000))[:, 0]
  assert abs(np.mean(samples < -0.5) - 0.3) < 0.01
  np.testing.assert_allclose(np.mean(samples), 0.3 * -1.5 + 0.7 * 1.0, atol=0.05)


def test_local_minima_are_strict_and_interior():
  np.testing.assert_array_equal(toys.local_minima([3.0, 1.0, 2.0, 0.5, 0.7, 0.7, 0.2]), [1, 3])


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def test_make_figures_writes_two_pngs_and_then_refuses(tmp_path):
  paths = toys.make_figures(str(tmp_path / "figures"))
  assert sorted(os.path.basename(path) for path in paths) == sorted(
      [toys.GRADIENT_PENALTY_FIGURE, toys.DIVERGENCE_FIGURE]
  )
  for path in paths:
    with open(path, "rb") as file:
      content = file.read()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 20_000, (path, len(content))
  with pytest.raises(InputError, match=toys.GRADIENT_PENALTY_FIGURE):
    toys.make_figures(str(tmp_path / "figures"))


def test_command_refuses_to_overwrite_in_one_line(tmp_path):
  existing = tmp_path / toys.DIVERGENCE_FIGURE
  existing.write_bytes(b"keep me")
  result = subprocess.run(
      [sys.executable, "-m", "bracplus_jax.toys", f"--out={tmp_path}"], capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: ") and str(existing) in lines[0], result.stderr
  assert existing.read_bytes() == b"keep me"
  assert not (tmp_path / toys.GRADIENT_PENALTY_FIGURE).exists()


def test_shares_a_process_with_the_other_commands():
  """Its flags are defined only when it runs as the program, so no flag name clashes on import."""
  import bracplus_jax.collection.collect  # noqa: F401  (defines --out and --seed too)
  import bracplus_jax.studies.toys  # noqa: F401
