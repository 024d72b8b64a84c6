"""Every BRAC+ objective against an independent computation: closed forms, quadrature, numpy, finite differences."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from scipy import integrate, stats

from bracplus_jax import losses, networks
from bracplus_jax.data.transitions import Transitions


def random_params(module, *inputs, seed=0, scale=0.5, dtype=None):
  """Parameters of the module's shapes drawn in numpy (no initialiser to compile)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
  return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, scale, leaf.shape), dtype or leaf.dtype), shapes)


# ---------------------------------------------------------------------------
# A behaviour model whose marginal is known: 1-D latent, 1-D pre-tanh action,
#   p(z) = N(0, 1),  p(u|z) = N(w z + b, s^2)  =>  pi_b(u) = N(b, w^2 + s^2),
# exact posterior p(z|u) = N(k (u - b), v), k = w / (w^2 + s^2), v = s^2 / (w^2 + s^2).
# Encoders q(z|u) = N(c u + d, e^2); the state is ignored.
# ---------------------------------------------------------------------------

W, B, S = 1.5, 0.3, 0.5


def toy_decode(observations, latents):
  return W * latents + B, jnp.full_like(latents, S)


def linear_encoder(c, d, e):
  def encode(observations, pre_tanh):
    return c * pre_tanh + d, jnp.full_like(pre_tanh, e)

  return encode


def exact_posterior_coefficients():
  k = W / (W**2 + S**2)
  return k, -k * B, np.sqrt(S**2 / (W**2 + S**2))


def true_kl(policy_mean, policy_std):
  """KL(N(m, sd^2) || pi_b) by numerical quadrature."""
  marginal_std = np.sqrt(W**2 + S**2)

  def integrand(u):
    log_pi = stats.norm.logpdf(u, policy_mean, policy_std)
    return np.exp(log_pi) * (log_pi - stats.norm.logpdf(u, B, marginal_std))

  value, _ = integrate.quad(integrand, policy_mean - 12 * policy_std, policy_mean + 12 * policy_std, limit=200)
  return value


def expected_bound(policy_mean, policy_std, c, d, e):
  """E_{u~pi, z~q(z|u)}[KL(pi || p(.|z)) + KL(q(z|u) || N(0,1))] integrated by hand for the linear model."""
  aggregate_mean = c * policy_mean + d
  aggregate_var = c**2 * policy_std**2 + e**2
  policy_to_decoder = (
      np.log(S / policy_std)
      + (policy_std**2 + (policy_mean - W * aggregate_mean - B) ** 2 + W**2 * aggregate_var) / (2 * S**2)
      - 0.5
  )
  posterior_to_prior = -np.log(e) + (e**2 + aggregate_mean**2 + c**2 * policy_std**2) / 2 - 0.5
  return policy_to_decoder + posterior_to_prior


def monte_carlo_bound(policy_mean, policy_std, encode, num_rows=20_000, num_latents=16, seed=0):
  sample_key, latent_key = jax.random.split(jax.random.PRNGKey(seed))
  mean = jnp.full((num_rows, 1), policy_mean)
  std = jnp.full((num_rows, 1), policy_std)
  pre_tanh = mean + std * jax.random.normal(sample_key, (num_rows, 1))
  observations = jnp.zeros((num_rows, 1))
  bound = losses.kl_upper_bound(latent_key, encode, toy_decode, observations, mean, std, pre_tanh, num_latents)
  assert bound.shape == (num_rows,)
  return float(jnp.mean(bound)), float(jnp.std(bound) / np.sqrt(num_rows))


ENCODERS = {
    "prior": (0.0, 0.0, 1.0),
    "exact_posterior": exact_posterior_coefficients(),
    "too_wide": (0.3, 0.1, 0.9),
    "anti_correlated": (-0.4, 0.2, 0.3),
}


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("policy_mean, policy_std", [(0.0, 0.4), (1.2, 0.2), (-0.8, 1.0)])
def test_kl_bound_matches_its_integral_and_bounds_the_true_kl(encoder, policy_mean, policy_std):
  c, d, e = ENCODERS[encoder]
  estimate, standard_error = monte_carlo_bound(policy_mean, policy_std, linear_encoder(c, d, e))
  integral = expected_bound(policy_mean, policy_std, c, d, e)
  assert abs(estimate - integral) < 5 * standard_error + 1e-4
  assert integral >= true_kl(policy_mean, policy_std) - 1e-9


def test_kl_bound_tightens_as_the_encoder_approaches_the_posterior():
  # A narrow policy: the bound's only slack is then KL(q(z|u) || p(z|u)).
  policy_mean, policy_std = 0.7, 0.01
  exact = np.array(exact_posterior_coefficients())
  prior = np.array(ENCODERS["prior"])
  kl = true_kl(policy_mean, policy_std)
  gaps = []
  for t in [0.0, 0.5, 0.9, 1.0]:
    c, d, e = (1 - t) * prior + t * exact
    estimate, _ = monte_carlo_bound(policy_mean, policy_std, linear_encoder(c, d, e), num_rows=4000, num_latents=64)
    gaps.append(estimate - kl)
  assert all(gap >= -1e-3 for gap in gaps)
  assert gaps == sorted(gaps, reverse=True)
  assert gaps[0] > 0.5
  assert abs(gaps[-1]) < 2e-3


def test_kl_bound_slack_at_the_exact_posterior_is_the_latent_mutual_information():
  # At the exact posterior the slack is I(u; z) + E_u KL(Q || p(z|u)), which for
  # this model is w^2 sd^2 / (s^2 (w^2 + s^2)): zero only for a point-mass policy.
  policy_mean, policy_std = 0.4, 0.6
  estimate, standard_error = monte_carlo_bound(policy_mean, policy_std, linear_encoder(*exact_posterior_coefficients()))
  slack = W**2 * policy_std**2 / (S**2 * (W**2 + S**2))
  assert abs(estimate - true_kl(policy_mean, policy_std) - slack) < 5 * standard_error + 1e-4


def test_kl_bound_is_zero_when_the_policy_is_the_behaviour_policy():
  def decode_ignoring_latent(observations, latents):
    return jnp.full(latents.shape[:-1] + (2,), 0.3), jnp.full(latents.shape[:-1] + (2,), 0.7)

  def prior_encoder(observations, pre_tanh):
    return jnp.zeros(pre_tanh.shape[:-1] + (3,)), jnp.ones(pre_tanh.shape[:-1] + (3,))

  mean, std = jnp.full((4, 2), 0.3), jnp.full((4, 2), 0.7)
  bound = losses.kl_upper_bound(
      jax.random.PRNGKey(0), prior_encoder, decode_ignoring_latent, jnp.zeros((4, 1)), mean, std, mean + 0.1
  )
  np.testing.assert_allclose(bound, 0.0, atol=1e-6)


def exact_log_likelihood(actions):
  pre_tanh = np.arctanh(actions)
  return stats.norm.logpdf(pre_tanh, B, np.sqrt(W**2 + S**2)) - np.log1p(-(actions**2))


def toy_elbo(encoder, actions, num_latents=40_000):
  return losses.behavior_elbo(
      jax.random.PRNGKey(1),
      linear_encoder(*encoder),
      toy_decode,
      jnp.zeros((len(actions), 1)),
      jnp.asarray(actions)[:, None],
      num_latents,
  )


def test_elbo_equals_the_log_likelihood_at_the_exact_posterior():
  actions = np.array([-0.8, -0.1, 0.4, 0.9])
  elbo = toy_elbo(exact_posterior_coefficients(), actions)
  np.testing.assert_allclose(elbo, exact_log_likelihood(actions), atol=0.01)


@pytest.mark.parametrize("encoder", ["prior", "too_wide", "anti_correlated"])
def test_elbo_falls_short_of_the_log_likelihood_by_the_posterior_kl(encoder):
  actions = np.array([-0.8, -0.1, 0.4, 0.9])
  c, d, e = ENCODERS[encoder]
  k, offset, posterior_std = exact_posterior_coefficients()
  pre_tanh = np.arctanh(actions)
  # KL(q(z|u) || p(z|u)) between two 1-D Gaussians, written out.
  q_mean, p_mean = c * pre_tanh + d, k * pre_tanh + offset
  posterior_kl = np.log(posterior_std / e) + (e**2 + (q_mean - p_mean) ** 2) / (2 * posterior_std**2) - 0.5
  elbo = np.asarray(toy_elbo((c, d, e), actions))
  assert np.all(elbo < exact_log_likelihood(actions))
  # Monte Carlo error of E_q[log p(u|z)] grows with the gap; 3% is several standard errors.
  np.testing.assert_allclose(exact_log_likelihood(actions) - elbo, posterior_kl, rtol=0.03, atol=0.01)


# ---------------------------------------------------------------------------
# The bound against a behaviour ensemble: member selection
# ---------------------------------------------------------------------------

OBS_DIM, ACT_DIM, LATENT_DIM, NUM_STATES, NUM_SAMPLES = 3, 2, 2, 7, 2


@pytest.fixture(scope="module")
def ensemble_problem():
  """A random 3-member ensemble whose encoders are all but deterministic (std ~ 5e-5), so
  the bound hardly depends on the latent draws and members can be compared exactly."""
  ensemble = networks.BehaviorVAEEnsemble(ACT_DIM, LATENT_DIM, hidden_dims=(8,), ensemble_size=3)
  stacked = (np.zeros((3, 1, OBS_DIM)), np.zeros((3, 1, ACT_DIM)), np.zeros((3, 1, LATENT_DIM)))
  params = random_params(ensemble, *[x.astype(np.float32) for x in stacked], seed=1)
  head = params["params"]["members"]["encoder"]["Dense_1"]
  head["kernel"] = head["kernel"].at[..., LATENT_DIM:].set(0.0)
  head["bias"] = head["bias"].at[..., LATENT_DIM:].set(-10.0)
  rng = np.random.default_rng(2)
  observations = jnp.asarray(rng.normal(size=(NUM_STATES, OBS_DIM)), jnp.float32)
  policy_mean = jnp.asarray(rng.normal(size=(NUM_STATES, ACT_DIM)), jnp.float32)
  policy_std = jnp.asarray(rng.uniform(0.2, 1.0, size=(NUM_STATES, ACT_DIM)), jnp.float32)
  pre_tanh = policy_mean + policy_std * jnp.asarray(rng.normal(size=(NUM_SAMPLES, NUM_STATES, ACT_DIM)), jnp.float32)

  member = ensemble.member()
  per_member = []
  for index in range(3):
    variables = networks.member_variables(params, index)
    encode = partial(member.apply, variables, method="encode")
    decode = partial(member.apply, variables, method="decode")
    samples = [
        losses.kl_upper_bound(jax.random.PRNGKey(9), encode, decode, observations, policy_mean, policy_std, u)
        for u in pre_tanh
    ]
    per_member.append(np.mean(samples, axis=0))
  inputs = (observations, policy_mean, policy_std, pre_tanh)
  return ensemble, params, inputs, np.stack(per_member)  # [members, states]


def ensemble_bounds(problem, members, num_keys=1):
  """KL(s) [keys, states] for num_keys member draws, compiled once."""
  ensemble, params, inputs, _ = problem

  def bound(key):
    return losses.ensemble_kl_upper_bound(key, ensemble, params, *inputs, members=members)

  keys = jax.random.split(jax.random.PRNGKey(0), num_keys)
  return np.asarray(jax.jit(jax.vmap(bound))(keys))


def test_ensemble_bound_over_all_members_is_the_member_mean(ensemble_problem):
  per_member = ensemble_problem[-1]
  np.testing.assert_allclose(ensemble_bounds(ensemble_problem, "all")[0], per_member.mean(0), rtol=1e-3)


def test_ensemble_bound_per_state_uses_one_member_per_state(ensemble_problem):
  per_member = ensemble_problem[-1]
  spread = np.min(np.abs(per_member[:, None] - per_member[None, :]) + np.eye(3)[..., None] * 1e9, axis=(0, 1))
  assert np.all(spread > 1e-2 * np.abs(per_member).max(0))  # members are distinguishable
  used = set()
  for bound in ensemble_bounds(ensemble_problem, "random_per_state", num_keys=6):
    distance = np.abs(bound[None] - per_member) / np.abs(per_member)
    chosen = distance.argmin(0)
    assert np.all(distance.min(0) < 1e-3)
    used.update(zip(range(NUM_STATES), chosen))
  assert len({member for _, member in used}) == 3
  assert len({state for state, _ in used}) == NUM_STATES


def test_ensemble_bound_per_batch_uses_one_member_for_every_state(ensemble_problem):
  per_member = ensemble_problem[-1]
  members = set()
  for bound in ensemble_bounds(ensemble_problem, "random_per_batch", num_keys=6):
    distance = np.abs(bound[None] - per_member) / np.abs(per_member)
    assert np.all(distance.min(0) < 1e-3)
    assert len(set(distance.argmin(0))) == 1
    members.add(int(distance.argmin(0)[0]))
  assert len(members) > 1


def test_ensemble_bound_rejects_an_unknown_member_mode(ensemble_problem):
  with pytest.raises(ValueError, match="member mode"):
    ensemble_bounds(ensemble_problem, "best")


def test_behavior_loss_sums_the_members_negative_elbo(ensemble_problem):
  ensemble, params, inputs, _ = ensemble_problem
  rng = np.random.default_rng(3)
  batch = Transitions(
      observations=inputs[0],
      actions=jnp.asarray(rng.uniform(-1, 1, size=(NUM_STATES, ACT_DIM)), jnp.float32),
      rewards=jnp.zeros(NUM_STATES),
      next_observations=inputs[0],
      dones=jnp.zeros(NUM_STATES),
  )
  loss, metrics = losses.behavior_loss(params, ensemble, jax.random.PRNGKey(0), batch)
  member = ensemble.member()
  expected = 0.0
  for index in range(3):
    variables = networks.member_variables(params, index)
    elbo = losses.behavior_elbo(
        jax.random.PRNGKey(5),
        partial(member.apply, variables, method="encode"),
        partial(member.apply, variables, method="decode"),
        batch.observations,
        batch.actions,
    )
    expected -= float(jnp.mean(elbo))
  # Near-deterministic encoders make the single latent draw irrelevant.
  assert float(loss) == pytest.approx(expected, rel=1e-3)
  assert float(metrics["behavior_nll_bound"]) == pytest.approx(expected / 3, rel=1e-3)


# ---------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------


def numpy_mmd_squared(x, y, sigma):
  def mean_kernel(a, b):
    return np.mean([[np.exp(-np.abs(p - q).sum() / (2 * sigma)) for q in b] for p in a])

  return mean_kernel(x, x) - 2 * mean_kernel(x, y) + mean_kernel(y, y)


@pytest.mark.parametrize("sigma", [0.5, 120.0])
def test_mmd_laplacian_matches_numpy(sigma):
  rng = np.random.default_rng(4)
  policy_samples = rng.normal(size=(3, 5, 2))
  behavior_samples = rng.normal(0.5, 1.5, size=(3, 4, 2))
  expected = [numpy_mmd_squared(policy_samples[i], behavior_samples[i], sigma) for i in range(3)]
  mmd_squared = losses.mmd_laplacian(policy_samples, behavior_samples, sigma)
  np.testing.assert_allclose(mmd_squared, expected, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(
      losses.mmd_laplacian(policy_samples, behavior_samples, sigma, squared=False),
      np.sqrt(np.array(expected) + 1e-6),
      rtol=1e-4,
  )


def test_sample_behavior_draws_from_the_generative_path():
  observations = jnp.zeros((2, 1))
  samples = losses.sample_behavior(jax.random.PRNGKey(0), toy_decode, observations, latent_dim=1, num_samples=50_000)
  assert samples.shape == (2, 50_000, 1)
  np.testing.assert_allclose(samples.mean(1), B, atol=0.03)
  np.testing.assert_allclose(samples.std(1), np.sqrt(W**2 + S**2), rtol=0.02)


def test_released_behavior_samples_are_decoder_means_at_latents_clipped_to_half():
  # toy_decode's mean W z + B is invertible: each sample's latent is (u - B) / W.
  observations = jnp.zeros((2, 1))
  samples = losses.sample_behavior(
      jax.random.PRNGKey(0), toy_decode, observations, latent_dim=1, num_samples=20_000, mode="released")
  latents = (np.asarray(samples) - B) / W
  assert np.all(np.abs(latents) <= 0.5 + 1e-5)
  # No decoder noise: P(|z| > 0.5) = 0.617 of the standard normal draws land on +-0.5 exactly.
  at_the_clip = np.isclose(np.abs(latents), 0.5, atol=1e-5)
  assert np.mean(at_the_clip) == pytest.approx(2 * stats.norm.sf(0.5), abs=0.02)
  inside = latents[~at_the_clip]
  assert np.std(inside) == pytest.approx(stats.truncnorm(-0.5, 0.5).std(), rel=0.05)


def test_released_behavior_samples_match_a_direct_decode_call():
  vae = networks.ConditionalVAE(ACT_DIM, LATENT_DIM, hidden_dims=(8,))
  observations = jnp.asarray(np.random.default_rng(5).normal(size=(4, OBS_DIM)), jnp.float32)
  params = random_params(vae, observations, jnp.zeros((4, ACT_DIM)), jnp.zeros((4, LATENT_DIM)), scale=1.0)
  decode = partial(vae.apply, params, method="decode")
  key = jax.random.PRNGKey(3)
  samples = losses.sample_behavior(key, decode, observations, LATENT_DIM, 6, mode="released")
  latent_key, _ = jax.random.split(key)
  latents = np.clip(np.asarray(jax.random.normal(latent_key, (4, 6, LATENT_DIM))), -0.5, 0.5)
  repeated = np.repeat(np.asarray(observations)[:, None, :], 6, axis=1)
  expected_mean, _ = vae.apply(params, repeated, latents, method="decode")
  np.testing.assert_allclose(samples, expected_mean, rtol=1e-5, atol=1e-6)
  drawn = losses.sample_behavior(key, decode, observations, LATENT_DIM, 6, mode="sampled")
  assert not np.allclose(drawn, samples)  # the model's draws carry the decoder's noise
  with pytest.raises(ValueError, match="released"):
    losses.sample_behavior(key, decode, observations, LATENT_DIM, 6, mode="mean")


# ---------------------------------------------------------------------------
# Gradient penalty and policy evaluation (Eq. 10)
# ---------------------------------------------------------------------------


@pytest.fixture
def critic_problem(float64):
  critic = networks.TwinCritic(hidden_dims=(6, 6))
  rng = np.random.default_rng(5)
  observations = rng.normal(size=(4, OBS_DIM))
  policy_actions = rng.uniform(-1, 1, size=(2, 4, ACT_DIM))
  params = random_params(critic, observations, policy_actions[0], seed=3, dtype=jnp.float64)
  return critic, params, observations, policy_actions


def finite_difference_action_gradients(critic, params, observations, actions, step=1e-6):
  gradients = np.zeros((2,) + actions.shape)
  for index in np.ndindex(actions.shape):
    offset = np.zeros_like(actions)
    offset[index] = step
    forward = np.asarray(critic.apply(params, observations, actions + offset))
    backward = np.asarray(critic.apply(params, observations, actions - offset))
    difference = (forward - backward) / (2 * step)  # [heads, ...]; only row index[:-1] moves
    gradients[(slice(None),) + index] = difference[(slice(None),) + index[:-1]]
  return gradients


@pytest.mark.parametrize("per_head_actions", [False, True])
def test_action_gradients_match_finite_differences(critic_problem, per_head_actions):
  critic, params, observations, policy_actions = critic_problem
  repeated = np.broadcast_to(observations, policy_actions.shape[:-1] + (OBS_DIM,))
  gradients = losses.action_gradients(partial(critic.apply, params), repeated, policy_actions, per_head_actions)
  expected = finite_difference_action_gradients(critic, params, repeated, policy_actions)
  np.testing.assert_allclose(gradients, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("per_head_actions", [False, True])
@pytest.mark.parametrize("weighting", ["hard", "soft"])
def test_gradient_penalty_matches_finite_differences(critic_problem, weighting, per_head_actions):
  critic, params, observations, policy_actions = critic_problem
  kl = np.array([0.5, 2.0, 1.2, 3.0])
  weights = losses.gradient_penalty_weights(jnp.asarray(kl), 1.0, weighting)
  if weighting == "hard":
    expected_weights = (kl > 1.0).astype(float)
  else:
    softplus = np.log1p(np.exp(kl - 1.0))
    expected_weights = softplus / softplus.max()
  np.testing.assert_allclose(weights, expected_weights, rtol=1e-12)

  repeated = np.broadcast_to(observations, policy_actions.shape[:-1] + (OBS_DIM,))
  squared_norms = (finite_difference_action_gradients(critic, params, repeated, policy_actions) ** 2).sum(-1)
  expected = 0.1 * np.mean(squared_norms.sum(0) * expected_weights)
  penalty, metrics = losses.gradient_penalty(partial(critic.apply, params), observations, policy_actions, weights, 0.1,
                                             per_head_actions)
  assert float(penalty) == pytest.approx(expected, rel=1e-6)
  assert float(metrics["gradient_penalty_active_fraction"]) == pytest.approx(np.mean(expected_weights > 0))


@pytest.mark.parametrize("per_head_actions", [False, True])
def test_gradient_penalty_parameter_gradient_matches_finite_differences(critic_problem, per_head_actions):
  # The double backprop: d/dpsi of a functional of grad_a Q_psi.
  critic, params, observations, policy_actions = critic_problem
  weights = jnp.array([1.0, 0.0, 0.5, 1.0])

  def penalty(p):
    return losses.gradient_penalty(partial(critic.apply, p), observations, policy_actions, weights, 0.1,
                                   per_head_actions)[0]

  gradient = jax.grad(penalty)(params)
  flat, unravel = ravel_pytree(params)
  flat_gradient, _ = ravel_pytree(gradient)
  rng = np.random.default_rng(6)
  step = 1e-6
  for _ in range(3):
    direction = rng.normal(size=flat.shape)
    numerical = (penalty(unravel(flat + step * direction)) - penalty(unravel(flat - step * direction))) / (2 * step)
    assert float(flat_gradient @ direction) == pytest.approx(float(numerical), rel=1e-5, abs=1e-9)
  assert float(jnp.abs(flat_gradient).max()) > 0.0


@pytest.mark.parametrize("backup", ["expected", "max"])
def test_td_target_matches_numpy(backup):
  rng = np.random.default_rng(7)
  next_q = rng.normal(size=(2, 3, 5))
  rewards, dones = rng.uniform(size=5), np.array([0.0, 1.0, 0.0, 0.0, 1.0])
  pessimistic = np.minimum(next_q[0], next_q[1])
  value = pessimistic.mean(0) if backup == "expected" else pessimistic.max(0)
  expected = rewards + 0.9 * (1 - dones) * value
  np.testing.assert_allclose(losses.td_target(next_q, rewards, dones, 0.9, backup), expected, rtol=1e-6)


def test_critic_loss_is_the_td_error_plus_the_penalty(critic_problem):
  critic, params, observations, policy_actions = critic_problem
  rng = np.random.default_rng(8)
  batch = Transitions(
      observations=jnp.asarray(observations),
      actions=jnp.asarray(rng.uniform(-1, 1, size=(4, ACT_DIM))),
      rewards=jnp.zeros(4),
      next_observations=jnp.asarray(observations),
      dones=jnp.zeros(4),
  )
  targets = jnp.asarray(rng.normal(size=4))
  weights = jnp.array([1.0, 1.0, 0.0, 1.0])
  q_values = np.asarray(critic.apply(params, batch.observations, batch.actions))
  td = ((q_values - np.asarray(targets)) ** 2).mean(-1).sum()
  penalty, _ = losses.gradient_penalty(partial(critic.apply, params), observations, policy_actions, weights, 0.3)

  without_penalty, _ = losses.critic_loss(params, critic.apply, batch, targets)
  with_penalty, metrics = losses.critic_loss(params, critic.apply, batch, targets, policy_actions, weights, 0.3)
  assert float(without_penalty) == pytest.approx(td, rel=1e-10)
  assert float(with_penalty) == pytest.approx(td + float(penalty), rel=1e-10)
  assert float(metrics["td_loss"]) == pytest.approx(td, rel=1e-10)


# ---------------------------------------------------------------------------
# Policy improvement and dual steps
# ---------------------------------------------------------------------------


def test_actor_loss_value_and_gradient_signs():
  rng = np.random.default_rng(9)
  q_values, log_prob = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 4))
  kl, alpha, beta = rng.uniform(size=4), rng.uniform(1, 2, size=4), 0.7
  expected = np.mean(-np.minimum(q_values[0], q_values[1]).mean(0) + alpha * kl - beta * log_prob.mean(0))
  loss, _ = losses.actor_loss(q_values, kl, alpha, log_prob, beta)
  assert float(loss) == pytest.approx(expected, rel=1e-5)

  grads = jax.grad(lambda *args: losses.actor_loss(*args)[0], argnums=(0, 1, 2, 3, 4))(
      jnp.asarray(q_values), jnp.asarray(kl), jnp.asarray(alpha), jnp.asarray(log_prob), jnp.asarray(beta)
  )
  q_grad, kl_grad, alpha_grad, log_prob_grad, beta_grad = map(np.asarray, grads)
  np.testing.assert_allclose(kl_grad, alpha / 4, rtol=1e-6)  # the KL term pulls toward pi_b, weighted by alpha(s)
  np.testing.assert_allclose(alpha_grad, 0.0)  # multipliers are constants for the actor
  assert float(beta_grad) == 0.0
  # Maximum entropy: descending the loss raises log pi (lowers entropy) when beta > 0.
  np.testing.assert_allclose(log_prob_grad, -beta / 12, rtol=1e-6)
  assert np.all(q_grad <= 0.0) and np.all(q_grad.sum(0) == pytest.approx(-1 / 12))


def test_initial_policy_loss_matches_numpy():
  kl, log_prob = np.array([0.2, 1.5]), np.array([[0.3, -0.4], [0.1, 0.2]])
  loss, _ = losses.initial_policy_loss(kl, log_prob, 0.5)
  assert float(loss) == pytest.approx(np.mean(kl - 0.5 * log_prob.mean(0)), rel=1e-6)


# H(pi) <= H0 ("max") is the Lagrangian term beta (H - H0) = -beta log pi + const;
# H(pi) >= H0 ("min") is beta (H0 - H) = +beta log pi + const.
ENTROPY_TERM_SIGN = {"max": -1.0, "min": 1.0}


@pytest.mark.parametrize("constraint", ["max", "min"])
def test_actor_loss_entropy_term_follows_the_constraint_direction(constraint):
  rng = np.random.default_rng(14)
  q_values, log_prob = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 4))
  kl, alpha, beta = rng.uniform(size=4), rng.uniform(1, 2, size=4), 0.7
  sign = ENTROPY_TERM_SIGN[constraint]
  expected = np.mean(-np.minimum(q_values[0], q_values[1]).mean(0) + alpha * kl + sign * beta * log_prob.mean(0))
  loss, metrics = losses.actor_loss(q_values, kl, alpha, log_prob, beta, constraint)
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(metrics["policy_entropy"]) == pytest.approx(-log_prob.mean(), rel=1e-5)
  log_prob_grad = jax.grad(lambda lp: losses.actor_loss(q_values, kl, alpha, lp, beta, constraint)[0])(
      jnp.asarray(log_prob))
  # Descending the loss: "max" raises log pi (less entropy), "min" lowers it (more entropy).
  np.testing.assert_allclose(log_prob_grad, sign * beta / 12, rtol=1e-6)


@pytest.mark.parametrize("constraint", ["max", "min"])
def test_initial_policy_loss_entropy_term_follows_the_constraint_direction(constraint):
  kl, log_prob = np.array([0.2, 1.5]), np.array([[0.3, -0.4], [0.1, 0.2]])
  sign = ENTROPY_TERM_SIGN[constraint]
  loss, _ = losses.initial_policy_loss(kl, log_prob, 0.5, constraint)
  assert float(loss) == pytest.approx(np.mean(kl + sign * 0.5 * log_prob.mean(0)), rel=1e-6)
  log_prob_grad = jax.grad(lambda lp: losses.initial_policy_loss(kl, lp, 0.5, constraint)[0])(
      jnp.asarray(log_prob))
  np.testing.assert_allclose(log_prob_grad, np.full((2, 2), sign * 0.5 / 4), rtol=1e-6)


def test_entropy_losses_reject_an_unknown_constraint():
  with pytest.raises(ValueError, match="max, min|'max', 'min'"):
    losses.entropy_loss(jnp.asarray(1.0), jnp.zeros(3), 0.0, "upper")


def sgd_step(loss_fn, params, learning_rate=0.1):
  optimizer = optax.sgd(learning_rate)
  grads = jax.grad(loss_fn)(params)
  updates, _ = optimizer.update(grads, optimizer.init(params))
  return optax.apply_updates(params, updates)


@pytest.mark.parametrize("kl_value, direction", [(2.5, 1.0), (0.3, -1.0)])
def test_global_alpha_step_follows_the_mean_violation(kl_value, direction):
  global_alpha = networks.GlobalAlpha()
  obs = np.zeros((4, OBS_DIM), np.float32)
  params = jax.jit(global_alpha.init)(jax.random.PRNGKey(0), obs)

  def loss(p):
    return losses.global_alpha_loss(global_alpha.apply(p, obs), jnp.full(4, kl_value), 1.0)[0]

  change = global_alpha.apply(sgd_step(loss, params), obs)[0] - global_alpha.apply(params, obs)[0]
  assert np.sign(float(change)) == direction


@pytest.mark.parametrize("constraint, entropy, direction", [
    ("max", 1.5, 1.0), ("max", -0.5, -1.0),  # H(pi) <= H0: beta grows while H(pi) > H0
    ("min", -0.5, 1.0), ("min", 1.5, -1.0),  # H(pi) >= H0: beta grows while H(pi) < H0
])
def test_beta_step_enforces_the_entropy_constraint(constraint, entropy, direction):
  beta = networks.LagrangeMultiplier(initial=1.0)
  params = jax.jit(beta.init)(jax.random.PRNGKey(0))
  log_prob = -entropy + np.random.default_rng(11).normal(0, 0.1, size=(2, 6))
  log_prob -= log_prob.mean() + entropy  # mean -log pi is exactly the entropy
  target_entropy = 0.5

  def loss(p):
    return losses.entropy_loss(beta.apply(p), jnp.asarray(log_prob), target_entropy, constraint)[0]

  change = beta.apply(sgd_step(loss, params)) - beta.apply(params)
  assert np.sign(float(change)) == direction
  # One SGD step on beta = softplus(raw): raw += lr softplus'(raw) g, g = H - H0 ("max"), H0 - H ("min").
  raw = float(params["params"]["raw"])
  violation = (entropy - target_entropy) * (1.0 if constraint == "max" else -1.0)
  new_raw = raw + 0.1 * violation / (1.0 + np.exp(-raw))
  assert float(change) == pytest.approx(np.log1p(np.exp(new_raw)) - np.log1p(np.exp(raw)), rel=1e-4)


@pytest.mark.parametrize("norm, direction", [(0.05, 1.0), (0.001, -1.0)])
def test_gradient_penalty_scale_step_holds_the_gradient_norm(norm, direction):
  scale = networks.LagrangeMultiplier(initial=0.5)
  params = jax.jit(scale.init)(jax.random.PRNGKey(0))

  def loss(p):
    return losses.gradient_penalty_scale_loss(scale.apply(p), jnp.asarray(norm), 0.01)[0]

  change = scale.apply(sgd_step(loss, params)) - scale.apply(params)
  assert np.sign(float(change)) == direction


def test_gradient_penalty_threshold_is_mean_plus_std():
  kl = np.random.default_rng(12).gamma(2.0, size=100)
  assert float(losses.gradient_penalty_threshold(jnp.asarray(kl))) == pytest.approx(kl.mean() + kl.std(), rel=1e-5)


def test_polyak_update_matches_its_formula():
  rng = np.random.default_rng(13)
  online = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=4)}
  target = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=4)}
  updated = losses.polyak_update(online, target, 0.005)
  for name in online:
    np.testing.assert_allclose(updated[name], 0.005 * online[name] + 0.995 * target[name], rtol=1e-6)


def test_stacked_latent_draws_equal_the_broadcast_ones_and_so_do_their_gradients():
  rng = np.random.default_rng(3)
  mean = jnp.asarray(rng.normal(size=(4, 7, 3)), jnp.float32)
  std = jnp.asarray(rng.uniform(0.1, 2.0, size=(4, 7, 3)), jnp.float32)
  key = jax.random.PRNGKey(5)
  noise = jax.random.normal(key, (4, 7, 5, 3))

  def loss(draw, mean, std):
    return jnp.sum(jnp.sin(draw(mean, std)) * jnp.arange(15.0).reshape(5, 3))

  stacked = lambda m, s: losses._draw_latents(key, m, s, 5)  # noqa: E731
  broadcast = lambda m, s: m[..., None, :] + s[..., None, :] * noise  # noqa: E731
  np.testing.assert_array_equal(stacked(mean, std), broadcast(mean, std))
  for ours, reference in zip(jax.grad(partial(loss, stacked), argnums=(0, 1))(mean, std),
                             jax.grad(partial(loss, broadcast), argnums=(0, 1))(mean, std)):
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)
  assert 5 <= losses.STACKED_LATENTS_MAX
