"""Diagonal Gaussians and the tanh-squashed Gaussian policy distribution.

Every density here is over the last axis; leading axes are batch axes. The
policy and the behaviour model both live in pre-tanh space u, with actions
a = tanh(u) (Haarnoja et al. 2018, App. C; BRAC+ App. F).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from bracplus_jax import random_bits

# Dataset actions sit on the boundary of [-1, 1] often enough that atanh must
# be clipped; this is the released code's bound.
ATANH_BOUND = 1.0 - 1e-6

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  """log N(x; mean, diag(std^2)), summed over the last axis."""
  z = (x - mean) / std
  return jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * _LOG_2PI, axis=-1)


def gaussian_entropy(std: jax.Array) -> jax.Array:
  """Differential entropy of N(., diag(std^2)), summed over the last axis."""
  return jnp.sum(jnp.log(std) + 0.5 * (1.0 + _LOG_2PI), axis=-1)


def gaussian_kl(
    mean_p: jax.Array, std_p: jax.Array, mean_q: jax.Array, std_q: jax.Array
) -> jax.Array:
  """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)) in closed form, summed over the last axis."""
  variance_ratio = (std_p / std_q) ** 2
  mahalanobis = ((mean_p - mean_q) / std_q) ** 2
  return 0.5 * jnp.sum(variance_ratio + mahalanobis - 1.0 - jnp.log(variance_ratio), axis=-1)


def standard_normal_kl(mean: jax.Array, std: jax.Array) -> jax.Array:
  """KL(N(mean, std^2) || N(0, I)): the VAE prior term."""
  return gaussian_kl(mean, std, jnp.zeros_like(mean), jnp.ones_like(std))


def sample_gaussian(
    key: jax.Array, mean: jax.Array, std: jax.Array, sample_shape: tuple[int, ...] = ()
) -> jax.Array:
  """Reparameterised draw mean + std * eps with shape sample_shape + mean.shape."""
  noise = random_bits.normal(key, sample_shape + jnp.shape(mean), jnp.result_type(mean))
  return mean + std * noise


def tanh_log_det_jacobian(pre_tanh: jax.Array) -> jax.Array:
  """sum_i log(1 - tanh(u_i)^2) in the overflow-free form 2 (log 2 - u - softplus(-2u))."""
  return jnp.sum(2.0 * (math.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh)), axis=-1)


def sample_tanh_gaussian(
    key: jax.Array, mean: jax.Array, std: jax.Array, sample_shape: tuple[int, ...] = ()
) -> tuple[jax.Array, jax.Array]:
  """Reparameterised tanh-Gaussian draw; returns (action, pre_tanh)."""
  pre_tanh = sample_gaussian(key, mean, std, sample_shape)
  return jnp.tanh(pre_tanh), pre_tanh


def tanh_gaussian_log_prob(pre_tanh: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  """log density of a = tanh(u) by change of variables (SAC, App. C, Eq. 21).

  Takes the pre-tanh value u rather than a: inverting tanh near +-1 loses all
  precision, and the sampler already returns u.
  """
  return gaussian_log_prob(pre_tanh, mean, std) - tanh_log_det_jacobian(pre_tanh)


def deterministic_action(mean: jax.Array) -> jax.Array:
  """The squashed mode of the pre-tanh Gaussian, tanh(mean)."""
  return jnp.tanh(mean)


def clipped_atanh(action: jax.Array, bound: float = ATANH_BOUND) -> jax.Array:
  """atanh of a dataset action clipped to +-bound, so boundary actions stay finite."""
  return jnp.arctanh(jnp.clip(action, -bound, bound))
