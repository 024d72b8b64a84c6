"""Densities and divergences checked against scipy, numerical calculus and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bracplus_jax import distributions


def test_gaussian_log_prob_and_entropy_match_scipy():
  rng = np.random.default_rng(0)
  x, mean = rng.normal(size=(2, 5, 3))
  std = rng.uniform(0.1, 2.0, size=(5, 3))
  expected = stats.norm.logpdf(x, mean, std).sum(-1)
  np.testing.assert_allclose(distributions.gaussian_log_prob(x, mean, std), expected, rtol=1e-5)
  np.testing.assert_allclose(distributions.gaussian_entropy(std), stats.norm.entropy(0.0, std).sum(-1), rtol=1e-5)


def test_gaussian_kl_matches_monte_carlo():
  rng = np.random.default_rng(1)
  mean_p, mean_q = rng.normal(size=(2, 3))
  std_p, std_q = rng.uniform(0.3, 1.5, size=(2, 3))
  samples = rng.normal(mean_p, std_p, size=(400_000, 3))
  log_ratio = stats.norm.logpdf(samples, mean_p, std_p) - stats.norm.logpdf(samples, mean_q, std_q)
  monte_carlo = log_ratio.sum(-1)
  standard_error = monte_carlo.std() / np.sqrt(len(monte_carlo))
  closed_form = distributions.gaussian_kl(mean_p, std_p, mean_q, std_q)
  assert abs(float(closed_form) - monte_carlo.mean()) < 5 * standard_error


def test_standard_normal_kl_is_zero_at_the_prior_and_positive_elsewhere():
  assert float(distributions.standard_normal_kl(jnp.zeros(4), jnp.ones(4))) == pytest.approx(0.0, abs=1e-7)
  assert float(distributions.standard_normal_kl(jnp.full(4, 0.3), jnp.full(4, 0.7))) > 0.0


def test_tanh_gaussian_density_matches_the_derivative_of_its_cdf(float64):
  # P(tanh(u) <= a) = Phi((atanh(a) - mean) / std) per dimension; its numerical
  # derivative in a is the squashed density, independent of any Jacobian formula.
  mean = np.array([0.3, -1.2])
  std = np.array([0.8, 0.4])
  actions = np.array([[-0.9, -0.95], [0.0, -0.5], [0.7, 0.2], [0.99, -0.999]])
  step = 1e-6

  def cdf(a):
    return stats.norm.cdf((np.arctanh(a) - mean) / std)

  numerical_density = np.prod((cdf(actions + step) - cdf(actions - step)) / (2 * step), axis=-1)
  log_prob = distributions.tanh_gaussian_log_prob(jnp.arctanh(actions), mean, std)
  np.testing.assert_allclose(np.exp(log_prob), numerical_density, rtol=1e-5)


def test_tanh_log_det_jacobian_is_stable_far_into_the_tails():
  pre_tanh = np.linspace(-30.0, 30.0, 61)[:, None]
  expected = np.log(1.0 / np.cosh(pre_tanh.astype(np.float64)) ** 2)[:, 0]
  computed = distributions.tanh_log_det_jacobian(jnp.asarray(pre_tanh, jnp.float32))
  assert np.all(np.isfinite(computed))
  np.testing.assert_allclose(computed, expected, rtol=1e-5, atol=1e-5)


def test_sample_tanh_gaussian_is_reparameterised():
  key = jax.random.PRNGKey(0)
  mean = jnp.array([0.5, -0.2])
  std = jnp.array([0.3, 1.1])
  action, pre_tanh = distributions.sample_tanh_gaussian(key, mean, std, (50_000,))
  assert action.shape == pre_tanh.shape == (50_000, 2)
  np.testing.assert_allclose(action, np.tanh(pre_tanh), rtol=1e-6)
  np.testing.assert_allclose(pre_tanh.mean(0), mean, atol=0.02)
  np.testing.assert_allclose(pre_tanh.std(0), std, rtol=0.02)
  # d u / d mean = 1 and d u / d std = eps for every draw.
  grad_mean = jax.grad(lambda m: distributions.sample_tanh_gaussian(key, m, std, (7,))[1].sum())(mean)
  np.testing.assert_allclose(grad_mean, [7.0, 7.0])
  noise = (pre_tanh[:7] - mean) / std
  grad_std = jax.grad(lambda s: distributions.sample_tanh_gaussian(key, mean, s, (7,))[1].sum())(std)
  np.testing.assert_allclose(grad_std, noise.sum(0), rtol=1e-4)


def test_deterministic_action_and_clipped_atanh():
  mean = np.array([-3.0, 0.0, 0.4])
  np.testing.assert_allclose(distributions.deterministic_action(mean), np.tanh(mean), rtol=1e-6)
  actions = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])
  pre_tanh = distributions.clipped_atanh(actions)
  assert np.all(np.isfinite(pre_tanh))
  np.testing.assert_allclose(pre_tanh[1:4], np.arctanh([-0.5, 0.0, 0.5]), rtol=1e-6)
  np.testing.assert_allclose(pre_tanh[jnp.array([0, 4])], np.arctanh([-(1 - 1e-6), 1 - 1e-6]), rtol=1e-3)
