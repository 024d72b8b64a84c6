"""The BRAC+ objectives: one pure function per equation of the paper.

Conventions, shared by every function here:
  * Losses are minimised and return (scalar loss, dict of scalar metrics).
  * Pre-tanh values u carry the policy and behaviour Gaussians; actions are
    a = tanh(u). Policy samples come sample-first, [n, N, act], as
    `distributions.sample_tanh_gaussian(key, mean, std, (n,))` returns them.
  * Per-state quantities (KL(s), alpha(s)) are arrays [N] that the caller
    computes once per update and passes in; inside the losses they are
    stop-gradient wherever the paper treats them as constants (GP weights,
    dual steps), and differentiable where the actor needs them.
  * `critic_loss` and `behavior_loss` take the parameters they are
    differentiated with respect to first, so `jax.grad(loss, has_aux=True)`
    applies directly; the others take arrays, and the caller differentiates a
    closure that produces them (see `actor_loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax

from bracplus_jax import distributions
from bracplus_jax import networks, random_bits
from bracplus_jax.data.transitions import Transitions

# (observations [..., obs], inputs [..., d]) -> (mean, std) [..., d'], any leading dims.
GaussianHead = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (observations [..., obs], actions [..., act]) -> Q-values [heads, ...].
CriticFn = Callable[[jax.Array, jax.Array], jax.Array]

ENSEMBLE_MEMBER_MODES = ("random_per_state", "random_per_batch", "all")
GRADIENT_PENALTY_WEIGHTINGS = ("hard", "soft")
TD_BACKUPS = ("expected", "max")
# "max": H(pi) <= H0 (paper, gym); "min": H(pi) >= H0 (paper's and released code's Adroit/MMD).
ENTROPY_CONSTRAINTS = ("max", "min")
# "sampled": z ~ N(0, I), u ~ p(u|s,z); "released": z clipped to +-0.5, u = the decoder's mean.
BEHAVIOR_SAMPLES = ("sampled", "released")
RELEASED_LATENT_CLIP = 0.5


def _entropy_sign(entropy_constraint: str) -> float:
  """+1 for H <= H0, -1 for H >= H0: the sign of H - H0 in the constraint g <= 0."""
  if entropy_constraint == "max":
    return 1.0
  if entropy_constraint == "min":
    return -1.0
  raise ValueError(f"unknown entropy constraint {entropy_constraint!r}; expected one of {ENTROPY_CONSTRAINTS}")


STACKED_LATENTS_MAX = 16  # more draws (the tests' Monte Carlo checks) broadcast instead


def _draw_latents(key: jax.Array, mean: jax.Array, std: jax.Array, num_latents: int) -> jax.Array:
  """num_latents reparameterised draws per row, as axis -2: [..., L, z]."""
  noise = random_bits.normal(key, mean.shape[:-1] + (num_latents, mean.shape[-1]), mean.dtype)
  if num_latents > STACKED_LATENTS_MAX:
    return mean[..., None, :] + std[..., None, :] * noise
  # The same numbers as above, one term per draw: the gradient to mean and std becomes a sum
  # of L slices, where the broadcast's is a reduction over axis -2 that XLA's CPU backend
  # runs several times slower for the few draws an update takes.
  return jnp.stack([mean + std * noise[..., draw, :] for draw in range(num_latents)], axis=-2)


def _shared_by_draws(observations: jax.Array) -> jax.Array:
  """[..., obs] -> [..., 1, obs]: one observation for the draws along axis -2. The networks'
  first layer broadcasts it (`networks.ConcatDense`), so it is multiplied once per state."""
  return observations[..., None, :]


# ---------------------------------------------------------------------------
# Behaviour model (Alg. 1 line 1, App. C)
# ---------------------------------------------------------------------------


def behavior_elbo(
    key: jax.Array,
    encode: GaussianHead,
    decode: GaussianHead,
    observations: jax.Array,
    actions: jax.Array,
    num_latents: int = 1,
) -> jax.Array:
  """ELBO of a dataset action under the conditional VAE (App. C, Eq. 12; beta = 1).

  log pi_b(a|s) >= E_{z~q(z|s,u)}[log p(a|s,z)] - KL(q(z|s,u) || N(0, I)),
  with u = atanh(clip(a)) and log p(a|s,z) = log N(u; decoder) - log|d tanh/du|
  (the tanh Jacobian makes it a density over actions). The expectation is a
  mean over `num_latents` reparameterised draws; the prior KL is closed form.
  Returns [...] for inputs [..., dim].
  """
  pre_tanh = distributions.clipped_atanh(actions)
  posterior_mean, posterior_std = encode(observations, pre_tanh)
  latents = _draw_latents(key, posterior_mean, posterior_std, num_latents)
  decoder_mean, decoder_std = decode(_shared_by_draws(observations), latents)
  log_likelihood = distributions.tanh_gaussian_log_prob(pre_tanh[..., None, :], decoder_mean, decoder_std)
  return jnp.mean(log_likelihood, axis=-1) - distributions.standard_normal_kl(posterior_mean, posterior_std)


def behavior_loss(
    behavior_params,
    behavior: networks.BehaviorVAEEnsemble,
    key: jax.Array,
    batch: Transitions,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Maximum-likelihood step for every ensemble member (Alg. 1 line 1): -ELBO.

  All members see the same batch (as in the released code); the loss sums the
  members' mean -ELBO so each member gets the gradient of its own objective.
  """
  encode = partial(behavior.apply, behavior_params, method="encode")
  decode = partial(behavior.apply, behavior_params, method="decode")
  observations, actions = networks.broadcast_to_members(
      (batch.observations, batch.actions), behavior.ensemble_size
  )
  elbo = behavior_elbo(key, encode, decode, observations, actions)  # [B, N]
  loss = -jnp.sum(jnp.mean(elbo, axis=1))
  return loss, {"behavior_nll_bound": -jnp.mean(elbo)}


# ---------------------------------------------------------------------------
# Divergences (Sec. 3.1)
# ---------------------------------------------------------------------------


def kl_upper_bound(
    key: jax.Array,
    encode: GaussianHead,
    decode: GaussianHead,
    observations: jax.Array,
    policy_mean: jax.Array,
    policy_std: jax.Array,
    pre_tanh_actions: jax.Array,
    num_latents: int = 5,
) -> jax.Array:
  """Analytical upper bound on KL(pi(.|s) || pi_b(.|s)) for one policy sample per row (Sec. 3.1.1, Eq. 7).

    KL(pi || pi_b) <= E_{u~pi, z~q(z|s,u)}[KL(pi(.|s) || p(.|s,z)) + KL(q(z|s,u) || N(0, I))]

  Both inner KLs are closed form: pi and p(.|s,z) are Gaussians in pre-tanh
  space, where KL equals KL between the squashed distributions. z is averaged
  over `num_latents` draws (App. F: L = 5). `pre_tanh_actions` is the draw
  u ~ pi, one per row; all inputs share leading dims [...], returns [...].

  The bound holds for any encoder: it is KL(pi(u) Q(z) || p(u|z) p(z)) plus the
  mutual information of (u, z) under pi(u) q(z|s,u), with Q the aggregate
  posterior. It is not tight at the exact posterior unless pi is narrow.
  """
  posterior_mean, posterior_std = encode(observations, pre_tanh_actions)
  latents = _draw_latents(key, posterior_mean, posterior_std, num_latents)
  decoder_mean, decoder_std = decode(_shared_by_draws(observations), latents)
  policy_to_decoder = distributions.gaussian_kl(
      policy_mean[..., None, :], policy_std[..., None, :], decoder_mean, decoder_std
  )
  return jnp.mean(policy_to_decoder, axis=-1) + distributions.standard_normal_kl(posterior_mean, posterior_std)


def ensemble_kl_upper_bound(
    key: jax.Array,
    behavior: networks.BehaviorVAEEnsemble,
    behavior_params,
    observations: jax.Array,
    policy_mean: jax.Array,
    policy_std: jax.Array,
    pre_tanh_actions: jax.Array,
    num_latents: int = 5,
    members: str = "random_per_state",
) -> jax.Array:
  """Per-state KL bound (Eq. 7) against the behaviour ensemble, averaged over n policy samples.

  observations [N, obs], policy_mean/std [N, act], pre_tanh_actions [n, N, act]
  -> KL(s) [N]. `members` chooses which ensemble members bound each state:
    "random_per_state" (paper, App. F): one uniformly random member per state,
        dealt by `networks.MemberAssignment`, at the cost of one member;
    "random_per_batch": one random member for the whole batch, read by slicing
        the stacked parameters, also at the cost of one member;
    "all" (released code): the mean over every member, B times the cost.
  """
  member_key, latent_key = jax.random.split(key)
  rows = (
      _shared_by_draws(observations),
      policy_mean[:, None, :],
      policy_std[:, None, :],
      jnp.swapaxes(pre_tanh_actions, 0, 1),
  )  # one row per state, the policy samples along axis 1

  def bound(params, stacked_rows):
    encode = partial(behavior.apply, params, method="encode")
    decode = partial(behavior.apply, params, method="decode")
    per_sample = kl_upper_bound(latent_key, encode, decode, *stacked_rows, num_latents=num_latents)
    return jnp.mean(per_sample, axis=-1)  # [members, rows]

  if members == "random_per_state":
    assignment = networks.MemberAssignment.random(member_key, observations.shape[0], behavior.ensemble_size)
    return assignment.from_members(bound(behavior_params, assignment.to_members(rows)))
  if members == "random_per_batch":
    member = jax.random.randint(member_key, (), 0, behavior.ensemble_size)
    one_member = networks.slice_members(behavior_params, member)
    return bound(one_member, networks.broadcast_to_members(rows, 1))[0]
  if members == "all":
    all_members = networks.broadcast_to_members(rows, behavior.ensemble_size)
    return jnp.mean(bound(behavior_params, all_members), axis=0)
  raise ValueError(f"unknown ensemble member mode {members!r}; expected one of {ENSEMBLE_MEMBER_MODES}")


def sample_behavior(
    key: jax.Array,
    decode: GaussianHead,
    observations: jax.Array,
    latent_dim: int,
    num_samples: int,
    mode: str = "sampled",
) -> jax.Array:
  """Pre-tanh samples of pi_b(.|s) through the VAE's generative path.

    "sampled": z ~ N(0, I), u ~ p(u|s,z), draws of the behaviour model;
    "released" (released code's MMD): z ~ N(0, I) clipped to +-0.5 and u =
        the decoder's mean at z, no decoder noise: points near the modes.

  Returns [..., num_samples, act] for observations [..., obs] (samples on axis
  -2, the layout `mmd_laplacian` takes).
  """
  if mode not in BEHAVIOR_SAMPLES:
    raise ValueError(f"unknown behaviour sample mode {mode!r}; expected one of {BEHAVIOR_SAMPLES}")
  latent_key, action_key = jax.random.split(key)
  latents = random_bits.normal(latent_key, observations.shape[:-1] + (num_samples, latent_dim), observations.dtype)
  if mode == "released":
    latents = jnp.clip(latents, -RELEASED_LATENT_CLIP, RELEASED_LATENT_CLIP)
  decoder_mean, decoder_std = decode(_shared_by_draws(observations), latents)
  if mode == "released":
    return decoder_mean
  return distributions.sample_gaussian(action_key, decoder_mean, decoder_std)


def _mean_laplacian_kernel(x: jax.Array, y: jax.Array, sigma: float) -> jax.Array:
  l1_distance = jnp.sum(jnp.abs(x[..., :, None, :] - y[..., None, :, :]), axis=-1)
  return jnp.mean(jnp.exp(-l1_distance / (2.0 * sigma)), axis=(-2, -1))


def mmd_laplacian(
    policy_samples: jax.Array, behavior_samples: jax.Array, sigma: float = 120.0, squared: bool = True
) -> jax.Array:
  """Sampled MMD between pi(.|s) and pi_b(.|s) with a Laplacian kernel (Eq. 5; App. D ablation).

    MMD^2 = E[k(x, x')] - 2 E[k(x, y)] + E[k(y, y')],  k(x, y) = exp(-||x - y||_1 / (2 sigma))

  on pre-tanh samples [..., n, d] and [..., m, d] -> [...]. Every expectation
  is the plain mean over all sample pairs (the V-statistic, as in BEAR and the
  released code). sigma = 120 is the paper's Adroit value. `squared=False`
  returns sqrt(MMD^2 + 1e-6) as the released code does.
  """
  mmd_squared = (
      _mean_laplacian_kernel(policy_samples, policy_samples, sigma)
      - 2.0 * _mean_laplacian_kernel(policy_samples, behavior_samples, sigma)
      + _mean_laplacian_kernel(behavior_samples, behavior_samples, sigma)
  )
  return mmd_squared if squared else jnp.sqrt(mmd_squared + 1e-6)


# ---------------------------------------------------------------------------
# Gradient-penalised policy evaluation (Sec. 3.3, Eq. 10)
# ---------------------------------------------------------------------------


def gradient_penalty_threshold(kl_values: jax.Array) -> jax.Array:
  """eps_GP = mean + std of KL(s) over the states seen in the previous epoch (Sec. 3.3)."""
  return jnp.mean(kl_values) + jnp.std(kl_values)


def gradient_penalty_weights(kl: jax.Array, threshold: jax.Array | float, weighting: str = "hard") -> jax.Array:
  """f(KL(s) - eps_GP) of Eq. 10, per state, with no gradient.

    "hard" (paper): the Heaviside step 1[KL(s) > eps_GP].
    "soft" (released code, gym): softplus(KL(s) - eps_GP) / max over the batch.
  """
  excess = jax.lax.stop_gradient(kl - threshold)
  if weighting == "hard":
    return (excess > 0.0).astype(kl.dtype)
  if weighting == "soft":
    soft = jax.nn.softplus(excess)
    return soft / jnp.max(soft)
  raise ValueError(f"unknown gradient penalty weighting {weighting!r}; expected one of {GRADIENT_PENALTY_WEIGHTINGS}")


def action_gradients(critic_fn: CriticFn, observations: jax.Array, actions: jax.Array,
                     per_head_actions: bool = False) -> jax.Array:
  """grad_a Q_j(s, a) for every head j: [heads, ..., act] for actions [..., act].

  Each Q(s, a) depends only on its own row, so the gradient of a sum is the
  per-row gradient. With `per_head_actions`, critic_fn(s, a, per_head_actions=True)
  takes a copy of the actions per head (`networks.TwinCritic`): head j's Q then
  depends on copy j only, and one backward pass of the heads' sum gives every
  head's gradient. Otherwise one forward pass and a VJP per head, each through
  every head: twice the backward work for two heads.
  """
  if per_head_actions:
    num_heads = jax.eval_shape(critic_fn, observations, actions).shape[0]
    copies = jnp.broadcast_to(actions, (num_heads,) + actions.shape)
    return jax.grad(lambda a: jnp.sum(critic_fn(observations, a, per_head_actions=True)))(copies)
  q_values, pullback = jax.vjp(lambda a: critic_fn(observations, a), actions)
  num_heads = q_values.shape[0]
  one_hot_heads = jnp.broadcast_to(
      jnp.eye(num_heads, dtype=q_values.dtype).reshape((num_heads, num_heads) + (1,) * (q_values.ndim - 1)),
      (num_heads,) + q_values.shape,
  )
  (gradients,) = jax.vmap(pullback)(one_hot_heads)
  return gradients


def gradient_penalty(
    critic_fn: CriticFn,
    observations: jax.Array,
    policy_actions: jax.Array,
    weights: jax.Array,
    scale: jax.Array | float = 0.1,
    per_head_actions: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """lambda * E_{s, a'~pi}[ ||grad_a Q(s, a')||^2 f(KL(s) - eps_GP) ], the penalty of Eq. 10.

  observations [N, obs], policy_actions [n, N, act] (squashed samples of the
  current policy, no gradient), weights [N] from `gradient_penalty_weights`,
  scale = lambda (paper 0.1; released code: a Lagrange variable). Summed over
  the Q heads, each head penalised on its own gradient. Differentiating this
  with respect to the critic's parameters inside `critic_fn` is the double
  backprop the penalty needs. `per_head_actions`: see `action_gradients`.
  """
  policy_actions = jax.lax.stop_gradient(policy_actions)
  gradients = action_gradients(critic_fn, observations, policy_actions, per_head_actions)  # [heads, n, N, act]
  squared_norms = jnp.sum(gradients**2, axis=-1)  # [heads, n, N]
  weighted = jnp.sum(squared_norms, axis=0) * weights
  penalty = scale * jnp.mean(weighted)
  gradient_norms = jnp.sqrt(squared_norms)
  metrics = {
      "gradient_penalty": penalty,
      "ood_gradient_norm": jnp.mean(gradient_norms),
      "weighted_ood_gradient_norm": jnp.mean(jnp.mean(gradient_norms, axis=(0, 1)) * weights),
      "gradient_penalty_active_fraction": jnp.mean(weights > 0.0),
  }
  return penalty, metrics


def td_target(
    next_q_values: jax.Array,
    rewards: jax.Array,
    dones: jax.Array,
    discount: float = 0.99,
    backup: str = "expected",
) -> jax.Array:
  """y = r + gamma (1 - done) V(s'), with no gradient (Eq. 10).

  next_q_values [heads, n, N] are the target critic at n next-state policy
  samples. V(s') is min over heads, then over the samples:
    "expected" (paper): the mean, E_{a'~pi} min_j Q'_j(s', a');
    "max" (released code): the max, with samples from a target policy.
  """
  pessimistic = jnp.min(next_q_values, axis=0)
  if backup == "expected":
    next_value = jnp.mean(pessimistic, axis=0)
  elif backup == "max":
    next_value = jnp.max(pessimistic, axis=0)
  else:
    raise ValueError(f"unknown TD backup {backup!r}; expected one of {TD_BACKUPS}")
  return jax.lax.stop_gradient(rewards + discount * (1.0 - dones) * next_value)


def critic_loss(
    critic_params,
    critic_apply: Callable[..., jax.Array],
    batch: Transitions,
    targets: jax.Array,
    policy_actions: jax.Array | None = None,
    penalty_weights: jax.Array | None = None,
    penalty_scale: jax.Array | float = 0.1,
    per_head_actions: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Gradient-penalised policy evaluation (Eq. 10), summed over the Q heads.

    sum_j E_D[(Q_j(s, a) - y)^2] + lambda E_{a'~pi}[||grad_a Q_j(s, a')||^2 f(KL(s) - eps_GP)]

  `targets` from `td_target`. Without `policy_actions` the penalty is off (the
  ablation, and the initial policy evaluation of Alg. 1 line 3).
  """
  q_values = critic_apply(critic_params, batch.observations, batch.actions)  # [heads, N]
  td_error = jnp.sum(jnp.mean((q_values - targets) ** 2, axis=-1))
  metrics = {"td_loss": td_error, "q_mean": jnp.mean(q_values), "target_mean": jnp.mean(targets)}
  if policy_actions is None:
    return td_error, metrics
  penalty, penalty_metrics = gradient_penalty(
      partial(critic_apply, critic_params), batch.observations, policy_actions, penalty_weights, penalty_scale,
      per_head_actions)
  return td_error + penalty, metrics | penalty_metrics


# ---------------------------------------------------------------------------
# Policy improvement (Sec. 3.2, Eq. 8, App. F entropy term)
# ---------------------------------------------------------------------------


def actor_loss(
    q_values: jax.Array,
    kl: jax.Array,
    alpha: jax.Array,
    log_prob: jax.Array,
    beta: jax.Array | float,
    entropy_constraint: str = "max",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Behaviour-regularised policy improvement with an entropy constraint (Eq. 8, App. F).

    min_theta E_s[ -E_{a~pi} min_j Q_j(s, a) + alpha(s) KL(s) + beta g(pi(.|s)) ]

  is the Lagrangian of max E[Q] s.t. KL(s) <= eps_KL and g <= 0, with H = -E[log pi]
  and H0 constant:
    "max" (paper, gym): H(pi) <= H0, g = H - H0, loss term -beta log pi; it pushes
        entropy down, against the KL term (KL = cross-entropy - H) that pushes it up;
    "min" (paper's Adroit table, released MMD code): H(pi) >= H0, g = H0 - H, loss
        term +beta log pi; it keeps the policy from collapsing.
  Pass beta = 0 to drop it.

  q_values [heads, n, N] at the current policy's samples, kl [N], alpha [N],
  log_prob [n, N]; the gradient flows through q_values, kl and log_prob, which
  the caller computes from the policy parameters. alpha and beta are constants
  here.
  """
  expected_q = jnp.mean(jnp.min(q_values, axis=0), axis=0)
  alpha = jax.lax.stop_gradient(alpha)
  beta = jax.lax.stop_gradient(beta)
  mean_log_prob = jnp.mean(log_prob, axis=0)
  entropy_term = -_entropy_sign(entropy_constraint) * beta * mean_log_prob
  loss = jnp.mean(-expected_q + alpha * kl + entropy_term)
  metrics = {
      "actor_loss": loss,
      "policy_q": jnp.mean(expected_q),
      "kl": jnp.mean(kl),
      "policy_entropy": -jnp.mean(mean_log_prob),
  }
  return loss, metrics


def initial_policy_loss(
    kl: jax.Array, log_prob: jax.Array, beta: jax.Array | float, entropy_constraint: str = "max"
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """argmin_pi KL(pi || pi_b) with the entropy constraint active (Alg. 1 line 2, App. F Initialization).

  kl [N], log_prob [n, N]; the same entropy term as `actor_loss`: -beta log pi for
  "max", +beta log pi for "min".
  """
  mean_log_prob = jnp.mean(log_prob, axis=0)
  entropy_term = -_entropy_sign(entropy_constraint) * jax.lax.stop_gradient(beta) * mean_log_prob
  loss = jnp.mean(kl + entropy_term)
  return loss, {"kl": jnp.mean(kl), "policy_entropy": -jnp.mean(mean_log_prob)}


def behavior_cloning_loss(
    policy_mean: jax.Array, policy_std: jax.Array, actions: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The baseline, not part of BRAC+: -E_D[log pi(a|s)], maximum likelihood of the dataset's
  actions under the tanh-Gaussian policy (u = atanh(clip(a)), with the tanh Jacobian).

  policy_mean, policy_std [N, act] at the batch states, actions [N, act].
  """
  log_prob = distributions.tanh_gaussian_log_prob(
      distributions.clipped_atanh(actions), policy_mean, policy_std)
  loss = -jnp.mean(log_prob)
  return loss, {"bc_nll": loss, "policy_std": jnp.mean(policy_std)}


# ---------------------------------------------------------------------------
# Dual steps (Alg. 1 lines 8-9) and target networks (line 10)
# ---------------------------------------------------------------------------


def lagrange_multiplier_loss(multiplier: jax.Array, violation: jax.Array) -> jax.Array:
  """-E[multiplier * stop_grad(violation)]: gradient descent on it is dual ascent.

  The multiplier grows where the constraint value exceeds its bound
  (violation > 0) and shrinks where it does not.
  """
  return -jnp.mean(multiplier * jax.lax.stop_gradient(violation))


def dual_violation(
    kl: jax.Array, kl_threshold: jax.Array | float, kind: str = "relative", max_violation: float = 1.0
) -> jax.Array:
  """How far each state is from its constraint, in units free of the divergence's scale.

    relative: clip((KL(s) - eps_KL) / eps_KL, -1, m), linear in KL(s) as Alg. 1 line 8 is;
              below eps_KL it is at least -1 (KL >= 0), above it reaches m, so one state far
              over the bound pushes up as hard as m states at KL = 0 pull down.
    log:      clip(log(KL(s) / eps_KL), -m, m), symmetric around eps_KL: KL = 2 eps_KL and
              KL = eps_KL / 2 push alpha(s) up and down equally hard, so up-moves cannot
              outrun down-moves, and near eps_KL it equals the relative violation to first
              order (log(1 + x) = x + O(x^2)).
  """
  if kind == "log":
    ratio = jnp.maximum(kl, 1e-12 * kl_threshold) / kl_threshold  # an estimate of 0 reads as tiny
    return jnp.clip(jnp.log(ratio), -max_violation, max_violation)
  return jnp.clip((kl - kl_threshold) / kl_threshold, -1.0, max_violation)


def alpha_dual_target(
    log_alpha: jax.Array,
    kl: jax.Array,
    kl_threshold: jax.Array | float,
    step_size: float,
    log_alpha_bounds: tuple[float, float],
    max_violation: float = 1.0,
    state_gain: jax.Array | float = 1.0,
    violation: str = "relative",
) -> jax.Array:
  """The state-wise dual step of Alg. 1 line 8, taken in log space and projected onto bounds.

    paper: alpha(s) <- alpha(s) + lr_alpha (KL(s) - eps_KL)
    here:  log alpha(s) <- clip(log alpha(s) + eta (mean(v) + g(s) (v(s) - mean(v))),
                                log alpha_min, log alpha_max)

  with v(s) the `dual_violation` of `violation`'s kind. Same sign and fixed point:
  alpha(s) grows where KL(s) > eps_KL and shrinks where it is below. The
  multiplicative (mirror-descent) step keeps alpha > 0; the violation is free of
  the divergence's units. The projection holds the bounds without windup.

  `state_gain` g(s) (a number or one per state) scales each state's departure from the
  batch's mean violation. In Alg. 1 every state's alpha(s) moves at every update; a
  batch of B of the data's N states carries a state's own part only when the batch
  reaches it, while the part every state shares moves at each update. g = 1 is the
  plain step; `learner.leverage_state_gain` sets g(s) from how often a batch reaches
  the state. With |v| <= m, one estimate moves log alpha(s) by at most
  eta (|mean(v)| + g |v(s) - mean(v)|) <= eta m (2 g - 1) for the log violation
  (eta (g m + g - 1) for the relative one, whose v lies in [-1, m]).
  log_alpha, kl [N] -> target [N], with no gradient.
  """
  v = dual_violation(kl, kl_threshold, violation, max_violation)
  # = mean(v) + g (v - mean(v)), written so that g = 1 gives v itself, bit for bit.
  departure = v - jnp.mean(v)
  step = v + (state_gain - 1.0) * departure
  target = jnp.clip(log_alpha + step_size * step, *log_alpha_bounds)
  return jax.lax.stop_gradient(target)


def row_offset_step(
    offsets: jax.Array,
    network_log_alpha: jax.Array,
    kl: jax.Array,
    kl_threshold: jax.Array | float,
    step_size: float,
    log_alpha_bounds: tuple[float, float],
    max_violation: float = 1.0,
    violation: str = "relative",
) -> jax.Array:
  """The drawn rows' own dual step (Alg. 1 line 8 for a table of alphas, in log space):

    d_i <- clip(n_i + d_i + eta_row v_i, log alpha_min, log alpha_max) - n_i

  with n_i the network's log alpha(s_i), d_i the row's offset (log alpha(s_i) = n_i + d_i)
  and v_i the `dual_violation` of `violation`'s kind. Only a row's own KL moves its offset,
  so the offsets hold each state at eps_KL where the network's shared step cannot tell
  states apart. A row moves when a batch draws it: eta_row is a step per draw, as the
  actor's own step at that state is, so it needs no rescaling by N / B (both move once per
  draw of the row). The projection onto the bounds keeps the offsets from winding up.
  offsets, network_log_alpha, kl [B] -> new offsets [B], with no gradient.
  """
  # The plain (gain 1) projected target of the row's whole log alpha, less the network's part.
  target = alpha_dual_target(network_log_alpha + offsets, kl, kl_threshold, step_size, log_alpha_bounds,
                             max_violation, 1.0, violation)
  return jax.lax.stop_gradient(target - network_log_alpha)


def alpha_loss(log_alpha: jax.Array, target: jax.Array) -> jax.Array:
  """1/2 E_s[(log alpha(s) - target(s))^2]: the regression that carries the dual step into
  the alpha(s) network's parameters (the learner sizes its step to land on the target)."""
  return 0.5 * jnp.mean((log_alpha - jax.lax.stop_gradient(target)) ** 2)


def global_alpha_loss(
    alpha: jax.Array, kl: jax.Array, kl_threshold: jax.Array | float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Released code: one alpha for all states, alpha <- alpha + lr E_s[KL(s) - eps_KL].

  Minimises -E_s[alpha stop_grad(KL(s) - eps_KL)] with the optimiser on alpha's
  softplus parameter (alpha [N] is the scalar broadcast over states).
  """
  loss = lagrange_multiplier_loss(alpha, kl - kl_threshold)
  return loss, {"alpha_loss": loss}


def entropy_loss(
    beta: jax.Array, log_prob: jax.Array, target_entropy: jax.Array | float,
    entropy_constraint: str = "max",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Dual step for the entropy constraint (Alg. 1 line 9).

    "max", H(pi) <= H0: beta <- beta + lr (H(pi(.|s)) - H0), beta grows while the
        policy is more random than H0 allows;
    "min", H(pi) >= H0: beta <- beta + lr (H0 - H(pi(.|s))), beta grows while the
        policy is less random than H0 requires;
  with H estimated as -E[log pi(a|s)] from the policy samples (log_prob [n, N]
  or [N]).
  """
  entropy = -jnp.mean(log_prob)
  loss = lagrange_multiplier_loss(beta, _entropy_sign(entropy_constraint) * (entropy - target_entropy))
  return loss, {"entropy_loss": loss, "beta": jnp.mean(beta), "policy_entropy": entropy}


def gradient_penalty_scale_loss(
    scale: jax.Array, weighted_ood_gradient_norm: jax.Array, max_ood_gradient_norm: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Released code only: lambda as a Lagrange variable holding the OOD gradient norm below a target.

    lambda <- lambda + lr (mean_s f(s) ||grad_a Q(s, a')|| - max_ood_grad_norm),
  fed by the `weighted_ood_gradient_norm` metric of `gradient_penalty`.
  """
  loss = lagrange_multiplier_loss(scale, weighted_ood_gradient_norm - max_ood_gradient_norm)
  return loss, {"gradient_penalty_scale_loss": loss, "gradient_penalty_scale": scale}


def polyak_update(online_params, target_params, tau: float):
  """psi' <- tau psi + (1 - tau) psi' (Alg. 1 line 10)."""
  return optax.incremental_update(online_params, target_params, tau)
