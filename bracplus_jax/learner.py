"""BRAC+ training state and its compiled steps: Algorithm 1 of the paper.

Only the order of operations lives here; every objective is in `losses`.
The steps are pure functions of (state, batch, key); `scan_steps` fuses many
of them into one compiled `lax.scan` that draws its batches on the device, and
`over_seeds` adds a leading seed axis to the same code with `vmap`.
"""

from __future__ import annotations

import math
from functools import cache, partial
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import jax.scipy.linalg
import ml_collections
import numpy as np
import optax
from flax.training.train_state import TrainState

from bracplus_jax import distributions, losses, networks
from bracplus_jax.data.transitions import Transitions
from bracplus_jax.random_bits import unroll_threefry_on_cpu

unroll_threefry_on_cpu()  # the same random bits, drawn faster on CPUs

Metrics = dict[str, jax.Array]
# The released code's cap on its scalar multipliers: alpha, and here beta and the GP weight too.
MULTIPLIER_MAXIMUM = 1e4
Step = Callable[[Any, Transitions, jax.Array], tuple[Any, Metrics]]


@flax.struct.dataclass
class BRACPlusState:
  """Every network's parameters and optimiser state, and the run's thresholds."""

  behavior: TrainState  # the B behaviour VAEs, stacked
  policy: TrainState
  policy_target_params: Any  # used by the released code's max backup only
  critic: TrainState  # both Q heads, stacked
  critic_target_params: Any
  alpha: TrainState  # alpha(s) network, or one global alpha
  entropy: TrainState  # beta, the multiplier of the maximum-entropy constraint
  gp_scale: TrainState  # lambda when it is a Lagrange variable (released code)
  kl_threshold: jax.Array  # eps_KL (Sec. 3.2)
  gp_threshold: jax.Array  # eps_GP (Sec. 3.3), recomputed every epoch
  target_entropy: jax.Array  # H0 (App. F)
  epoch_kl_moments: jax.Array  # count, sum, sum of squares of the KL(s) seen this epoch
  # This run's values of the algo fields a sweep varies ({} without one): see `value`.
  hyper: dict[str, jax.Array]


def _inverse_softplus(value: jax.Array) -> jax.Array:
  """raw with softplus(raw) = value: a multiplier's parameter for a start of `value`."""
  return value + jnp.log(-jnp.expm1(-value))


def _apply_gradients(train_state: TrainState, gradients) -> TrainState:
  return train_state.apply_gradients(grads=gradients)


# The released code's start-up learning rates: x1, .5, .1, .05, .01 of the base rate, one
# factor per fifth of the phase (and .01 from then on, for the VAEs' steps during RL).
RELEASED_STARTUP_FACTORS = (1.0, 0.5, 0.1, 0.05, 0.01)


def released_startup_schedule(learning_rate: float, num_steps: int) -> optax.Schedule:
  """learning_rate x RELEASED_STARTUP_FACTORS[k] on steps [k/5, (k+1)/5) x num_steps."""
  scales: dict[int, float] = {}
  for fifth in range(1, 5):
    boundary = fifth * num_steps // 5
    step_down = RELEASED_STARTUP_FACTORS[fifth] / RELEASED_STARTUP_FACTORS[fifth - 1]
    scales[boundary] = scales.get(boundary, 1.0) * step_down  # short phases share boundaries
  return optax.piecewise_constant_schedule(learning_rate, scales)


class BRACPlus:
  """The algorithm for one dataset's dimensions and one `algo` config.

  Holds the Flax modules (static); all state lives in `BRACPlusState`.
  """

  def __init__(self, algo: ml_collections.ConfigDict, observation_dim: int, action_dim: int, *,
               behavior_steps: int | None = None, policy_init_steps: int | None = None,
               swept: tuple[str, ...] = (), dataset_size: int | None = None):
    """`behavior_steps` and `policy_init_steps` (the config's) place the start-up learning
    rates' steps when `algo.startup_lr_schedule` is "released"; "constant" needs neither.
    `swept` names the algo fields whose values each run's state carries (`bracplus_jax.sweep`).
    `dataset_size` N bounds alpha(s)'s leverage gain at N / B (`leverage_state_gain`) and sizes
    its row offsets (`alpha_dual_gain` "rows"); None takes each batch for the whole data, which
    the row offsets refuse."""
    self.algo = algo
    self.dataset_size = dataset_size
    self.alpha_rows = (algo.alpha == "state" and algo.get("alpha_dual_gain", "constant") == "rows"
                       and self.alpha_dual_fit != "paper")
    if self.alpha_rows and not dataset_size:
      raise ValueError("alpha_dual_gain 'rows' keeps one offset per dataset row: pass dataset_size")
    self.swept = tuple(swept)
    self.observation_dim = observation_dim
    self.action_dim = action_dim
    latent_dim = algo.behavior_latent_dim or 2 * action_dim
    matmul_dtype = algo.get("matmul_dtype", "float32")  # runs saved before the option: float32
    self.policy = networks.TanhGaussianPolicy(
        action_dim, tuple(algo.policy_hidden_dims), algo.policy_scale, matmul_dtype)
    self.critic = networks.TwinCritic(tuple(algo.critic_hidden_dims), matmul_dtype)
    self.behavior = networks.BehaviorVAEEnsemble(
        action_dim, latent_dim, tuple(algo.behavior_hidden_dims), algo.behavior_ensemble_size, matmul_dtype)
    if algo.alpha == "state":
      self.alpha = networks.StateAlpha(
          tuple(algo.alpha_hidden_dims), algo.alpha_init, algo.alpha_min, algo.alpha_max,
          output="softplus" if self.alpha_dual_fit == "paper" else "log")
    else:
      self.alpha = networks.GlobalAlpha(algo.alpha_init, MULTIPLIER_MAXIMUM)
    self.entropy = networks.LagrangeMultiplier(algo.entropy_init, maximum=MULTIPLIER_MAXIMUM)
    self.gp_scale = networks.LagrangeMultiplier(
        algo.gp_lambda, minimum=algo.gp_lambda, maximum=MULTIPLIER_MAXIMUM)
    # Runs saved before these options existed (their config.json has no field) regularised
    # MMD^2 of the model's samples and ran at constant start-up rates.
    self.mmd_squared = algo.get("mmd_scale", "squared") == "squared"
    self.mmd_behavior_samples = algo.get("mmd_behavior_samples", "sampled")
    # Built once: optimisers are static parts of the state, so new ones would recompile.
    names = ("behavior", "policy_init", "policy", "critic", "alpha", "entropy", "gp_lagrange")
    self.schedule_steps = {}  # optimiser -> its phase's steps, for the released schedule
    if algo.get("startup_lr_schedule", "constant") == "released":
      self.schedule_steps = {"behavior": behavior_steps, "policy_init": policy_init_steps}
      for name, steps in self.schedule_steps.items():
        if steps is None:
          raise ValueError(f"startup_lr_schedule 'released' needs the {name} phase's step count")
    self.learning_rates = {name: self.rate(name, self.base_rate(name)) for name in names}
    self.optimizers = {}
    for name in names:
      if f"{name}_lr" in self.swept:  # a hyper-parameter in the optimiser's state, set per run
        self.optimizers[name] = optax.inject_hyperparams(
            lambda learning_rate, name=name: optax.adam(self.rate(name, learning_rate)))(
                learning_rate=self.base_rate(name))
      else:
        self.optimizers[name] = optax.adam(self.learning_rates[name])
    # KL bound: kl_policy_samples draws; MMD: mmd_samples draws on each side.
    self.num_policy_samples = algo.mmd_samples if algo.divergence == "mmd" else algo.kl_policy_samples
    if algo.alpha == "state" and self.alpha_dual_fit == "paper":  # Alg. 1 line 8 at lr_alpha
      optimizer = optax.adam if algo.get("alpha_paper_optimizer", "adam") == "adam" else optax.sgd
      self.optimizers["alpha"] = optimizer(algo.alpha_lr)
    elif algo.alpha == "state":  # the dual step sets its own length (see `alpha_dual`)
      self.optimizers["alpha"] = optax.sgd(1.0)

  @property
  def alpha_dual_fit(self) -> str:
    """alpha(s)'s dual step; runs saved before the option took the line search."""
    return self.algo.get("alpha_dual_fit", "line_search")

  # -------------------------------------------------------------------------
  # State
  # -------------------------------------------------------------------------

  def base_rate(self, name: str) -> float:
    """The config's learning rate of optimiser `name` (a schedule's first value)."""
    return float(getattr(self.algo, f"{name}_lr"))

  def rate(self, name: str, learning_rate):
    """Optimiser `name`'s learning rate or schedule from its base rate."""
    if name in self.schedule_steps:
      return released_startup_schedule(learning_rate, self.schedule_steps[name])
    return learning_rate

  def value(self, state: BRACPlusState, name: str, saved_before=None):
    """This run's value of algo field `name`: its sweep value, or the config's; `saved_before`
    is the value for runs saved before the field existed."""
    if name in state.hyper:
      return state.hyper[name]
    return getattr(self.algo, name) if saved_before is None else self.algo.get(name, saved_before)

  def _train_state(self, apply_fn, params, optimizer: str, hyper: dict[str, jax.Array]) -> TrainState:
    """A TrainState on optimiser `optimizer`, at this run's learning rate where it is swept."""
    train_state = TrainState.create(apply_fn=apply_fn, params=params, tx=self.optimizers[optimizer])
    if f"{optimizer}_lr" not in hyper:
      return train_state
    opt_state = train_state.opt_state
    rate = jnp.asarray(hyper[f"{optimizer}_lr"], opt_state.hyperparams["learning_rate"].dtype)
    return train_state.replace(opt_state=opt_state._replace(
        hyperparams={**opt_state.hyperparams, "learning_rate": rate}))

  def _initial_params(self, params, hyper: dict[str, jax.Array]):
    """(alpha, entropy) parameters that start at this run's alpha_init and entropy_init."""
    alpha_params, entropy_params = params
    if "entropy_init" in hyper:
      entropy_params = {"params": {"raw": _inverse_softplus(hyper["entropy_init"])}}
    if "alpha_init" in hyper:
      if self.algo.alpha == "global":
        alpha_params = {"params": {"multiplier": {"raw": _inverse_softplus(hyper["alpha_init"])}}}
      else:  # the head's output + the config's start: the head's bias makes up the rest
        head = alpha_params["params"]["head"]
        if self.alpha_dual_fit == "paper":  # softplus head
          shift = _inverse_softplus(hyper["alpha_init"]) - _inverse_softplus(jnp.float32(self.algo.alpha_init))
        else:  # log alpha(s) = head(x) + log(config's alpha_init)
          shift = jnp.log(hyper["alpha_init"]) - math.log(self.algo.alpha_init)
        alpha_params = {"params": {**alpha_params["params"], "head": {**head, "bias": head["bias"] + shift}}}
    return alpha_params, entropy_params

  def init(self, key: jax.Array, hyper: dict[str, jax.Array] | None = None) -> BRACPlusState:
    """A run's initial state; `hyper` = its values of the swept fields (`self.swept`)."""
    hyper = {name: jnp.asarray(value, jnp.float32) for name, value in (hyper or {}).items()}
    if set(hyper) != set(self.swept):
      raise ValueError(f"init needs values of exactly the swept fields {self.swept}, got {tuple(hyper)}")
    keys = jax.random.split(key, 6)
    observations = jnp.zeros((1, self.observation_dim))
    actions = jnp.zeros((1, self.action_dim))
    ensemble_size = self.behavior.ensemble_size
    behavior_inputs = networks.broadcast_to_members(
        (observations, actions, jnp.zeros((1, self.behavior.latent_dim))), ensemble_size)
    algo = self.algo
    policy_params = self.policy.init(keys[0], observations)
    critic_params = self.critic.init(keys[1], observations, actions)
    alpha_params, entropy_params = self._initial_params(
        (self.alpha.init(keys[3], observations), self.entropy.init(keys[4])), hyper)
    if self.alpha_rows:  # each dataset row's own log alpha offset, a variable collection of its own
      alpha_params = {**alpha_params, "rows": {"log_alpha": jnp.zeros(self.dataset_size)}}
    target_entropy = hyper.get("target_entropy", jnp.asarray(
        -math.inf if algo.target_entropy is None else float(algo.target_entropy)))
    return BRACPlusState(
        behavior=self._train_state(
            self.behavior.apply, self.behavior.init(keys[2], *behavior_inputs), "behavior", hyper),
        policy=self._train_state(self.policy.apply, policy_params, "policy_init", hyper),
        policy_target_params=policy_params,
        critic=self._train_state(self.critic.apply, critic_params, "critic", hyper),
        critic_target_params=critic_params,
        alpha=self._train_state(self.alpha.apply, alpha_params, "alpha", hyper),
        entropy=self._train_state(self.entropy.apply, entropy_params, "entropy", hyper),
        gp_scale=self._train_state(self.gp_scale.apply, self.gp_scale.init(keys[5]), "gp_lagrange", hyper),
        kl_threshold=jnp.asarray(jnp.inf),
        gp_threshold=jnp.asarray(jnp.inf),
        target_entropy=target_entropy,
        epoch_kl_moments=jnp.zeros(3),
        hyper=hyper,
    )

  def start_rl(self, state: BRACPlusState) -> BRACPlusState:
    """Switches the policy from its initialisation learning rate to the RL one (Alg. 1 line 4),
    and restarts beta's optimiser, as the released code does at this switch."""
    policy = self._train_state(self.policy.apply, state.policy.params, "policy", state.hyper)
    entropy = self._train_state(self.entropy.apply, state.entropy.params, "entropy", state.hyper)
    return state.replace(policy=policy, entropy=entropy, policy_target_params=state.policy.params,
                         critic_target_params=state.critic.params)

  def end_policy_init(self, state: BRACPlusState) -> BRACPlusState:
    """The target policy starts from the initial policy, so that the max backup of the
    initial policy evaluation (Alg. 1 line 3) evaluates that policy, not the random one."""
    return state.replace(policy_target_params=state.policy.params)

  # -------------------------------------------------------------------------
  # Shared pieces
  # -------------------------------------------------------------------------

  def _policy_samples(self, policy_params, observations, key, num_samples):
    """(actions, pre_tanh, log_prob, mean, std): num_samples reparameterised draws per state."""
    mean, std = self.policy.apply(policy_params, observations)
    actions, pre_tanh = distributions.sample_tanh_gaussian(key, mean, std, (num_samples,))
    log_prob = distributions.tanh_gaussian_log_prob(pre_tanh, mean, std)
    return actions, pre_tanh, log_prob, mean, std

  def divergence(self, behavior_params, observations, mean, std, pre_tanh, key) -> jax.Array:
    """D(pi(.|s), pi_b(.|s)) per state [N]: the KL upper bound (Eq. 7) or the sampled MMD."""
    algo = self.algo
    if algo.divergence == "kl":
      return losses.ensemble_kl_upper_bound(
          key, self.behavior, behavior_params, observations, mean, std, pre_tanh,
          num_latents=algo.kl_latent_samples, members=algo.kl_ensemble)
    behavior_samples = self.behavior_samples(behavior_params, observations, key)
    return losses.mmd_laplacian(jnp.swapaxes(pre_tanh, 0, 1), behavior_samples, algo.mmd_sigma,
                                squared=self.mmd_squared)

  def behavior_samples(self, behavior_params, observations, key) -> jax.Array:
    """The MMD's pre-tanh samples of pi_b(.|s) [N, mmd_samples, act], from one random member
    (`algo.mmd_behavior_samples`: the model's draws, or the released code's decoder means)."""
    member_key, sample_key = jax.random.split(key)
    member = jax.random.randint(member_key, (), 0, self.behavior.ensemble_size)
    one_member = networks.member_variables(behavior_params, member)
    decode = partial(self.behavior.member().apply, one_member, method="decode")
    return losses.sample_behavior(sample_key, decode, observations, self.behavior.latent_dim,
                                  self.algo.mmd_samples, self.mmd_behavior_samples)

  def _policy_terms(self, behavior_params, observations, key, num_samples=None):
    """The policy's samples and D(s) as a function of its parameters, for one shared vjp."""
    sample_key, divergence_key = jax.random.split(key)
    num_samples = num_samples or self.num_policy_samples

    def terms(policy_params):
      actions, pre_tanh, log_prob, mean, std = self._policy_samples(
          policy_params, observations, sample_key, num_samples)
      divergence = self.divergence(behavior_params, observations, mean, std, pre_tanh, divergence_key)
      return actions, log_prob, divergence

    return terms

  def _q_values(self, critic_params, observations, actions) -> jax.Array:
    """Q heads at [n, N, act] actions for [N, obs] states: [heads, n, N]."""
    return self.critic.apply(critic_params, observations, actions)

  def _penalty_scale(self, state: BRACPlusState):
    """lambda of Eq. 10: the gp_lagrange multiplier, or this run's constant gp_lambda."""
    if "gp_lambda" in state.hyper:  # swept (sweeps refuse gp_lambda with gp_lagrange)
      return state.hyper["gp_lambda"]
    return state.gp_scale.apply_fn(state.gp_scale.params)

  def _multiplier_step(self, train_state: TrainState, loss_fn):
    """One dual step on a scalar multiplier: loss_fn(value) -> (loss, metrics)."""
    values, pullback = jax.vjp(train_state.apply_fn, train_state.params)
    value_gradients, metrics = jax.grad(loss_fn, has_aux=True)(values)
    (gradients,) = pullback(value_gradients)
    return _apply_gradients(train_state, gradients), metrics

  def _entropy_step(self, state: BRACPlusState, log_prob: jax.Array):
    """Alg. 1 line 9: beta's dual step for the configured entropy constraint."""
    return self._multiplier_step(state.entropy, lambda beta: losses.entropy_loss(
        beta, log_prob, state.target_entropy, self.algo.entropy_constraint))

  def alpha_dual(self, state: BRACPlusState, observations: jax.Array, divergence: jax.Array,
                 rows: jax.Array | None = None):
    """(alpha(s) [N], a thunk for the dual step of Alg. 1 line 8), from one forward pass.

    State-wise, `algo.alpha_dual_fit`:
      "kernel" (default): the network's log alpha(s) moves towards the projected
          log-space targets of `losses.alpha_dual_target`, state by state: the
          damped Gauss-Newton step J^T (J J^T + lambda I)^-1 (target - log alpha),
          with J J^T from `StateAlpha.tangent_kernel`. To first order it moves the
          batch's log alpha(s) by the ridge fit of their changes (each state to its
          own target as lambda -> 0 where J J^T is non-singular; a batch drawn with
          replacement repeats states, and then a repeated state moves to the mean
          of its copies' targets). A plain gradient step moves all states by nearly
          the batch's mean change, since J J^T is dominated by the direction every
          state shares; solving with it undoes that.
      "line_search": one gradient step of the same regression, its length the exact
          line search of the linearised network (least squares over the batch).
      "paper": Alg. 1 line 8 as written, on the paper's softplus network: the dual
          gradient of E_s[alpha(s) (KL(s) - eps_KL)] by `algo.alpha_paper_optimizer`
          (Adam, as the released code steps its scalar alpha, or SGD) at lr_alpha =
          `algo.alpha_lr`, no bound beyond alpha > 0.
    For the first two, the per-state change is set by the dual step size, not by the
    network's width, depth or an optimiser's normalisation (Adam on a linear dual loss
    moves every weight by ~lr and the output ~1000x faster), and each state's own part is
    set by `algo.alpha_dual_gain`:
      "rows" (default): log alpha(s_i) = the network's log alpha(s_i) + d_i, one offset d_i
          per dataset row i (`rows`: the batch's rows). The network takes the plain step
          (g = 1): the part the network shares between states moves at every update. Each
          drawn row's offset takes its own step (`row_offset_step`), so every state's
          alpha(s) rises and falls with its own KL(s), whatever the network pools.
      "leverage": the departure from the batch's mean violation scaled by `leverage_state_gain`;
      "constant": scaled by `algo.alpha_dual_state_gain`.
    Global (released code): Adam on alpha's softplus parameter.
    """
    algo, train_state = self.algo, state.alpha
    if algo.alpha == "global" or self.alpha_dual_fit == "paper":
      values, pullback = jax.vjp(lambda params: train_state.apply_fn(params, observations),
                                 train_state.params)

      def gradient_step():
        value_gradients, metrics = jax.grad(losses.global_alpha_loss, has_aux=True)(
            values, divergence, state.kl_threshold)
        (gradients,) = pullback(value_gradients)
        return _apply_gradients(train_state, gradients), metrics

      return values, gradient_step

    # Runs saved before these options go on with the step they began with.
    fit = self.alpha_dual_fit
    max_violation = algo.get("alpha_dual_max_violation", 1.0)
    violation = algo.get("alpha_dual_violation", "relative")
    gain = algo.get("alpha_dual_gain", "constant")
    network_params = {"params": train_state.params["params"]}
    log_alpha_of = lambda params: train_state.apply_fn(params, observations, method="log_alpha")  # noqa: E731
    network_log_alpha, linearized = jax.linearize(log_alpha_of, network_params)
    log_bounds = (math.log(algo.alpha_min), math.log(algo.alpha_max))
    log_alpha = network_log_alpha
    if self.alpha_rows:
      if rows is None:
        raise ValueError("alpha_dual_gain 'rows' needs the batch's dataset rows: draw batches with "
                         "Transitions.sample, or set their index")
      log_alpha = log_alpha + train_state.params["rows"]["log_alpha"][rows]
    values = jnp.exp(jnp.clip(log_alpha, *log_bounds))

    def state_step():
      metrics = {}
      kernel = None
      if fit == "kernel" or gain == "leverage":
        kernel = train_state.apply_fn(train_state.params, observations, method="tangent_kernel")
      if gain == "leverage":
        # Without a dataset size the batch is taken for the whole data: every state in
        # every batch, so g = 1.
        dataset_size = self.dataset_size or observations.shape[0]
        state_gain = leverage_state_gain(kernel, algo.alpha_dual_damping, dataset_size)
        metrics |= {"alpha_gain_mean": jnp.mean(state_gain), "alpha_gain_max": jnp.max(state_gain)}
      elif gain == "rows":
        state_gain = 1.0
      else:
        state_gain = self.value(state, "alpha_dual_state_gain", saved_before=1.0)
      target = losses.alpha_dual_target(
          log_alpha, divergence, state.kl_threshold, self.value(state, "alpha_dual_step"), log_bounds,
          max_violation, state_gain, violation)
      loss, residual_gradient = jax.value_and_grad(losses.alpha_loss)(log_alpha, target)
      residual = log_alpha - target
      metrics["alpha_loss"] = loss
      if fit == "kernel":
        output_weights = damped_kernel_solve(kernel, residual, algo.alpha_dual_damping)
        (scaled,) = jax.linear_transpose(linearized, network_params)(output_weights)
      else:
        (gradients,) = jax.linear_transpose(linearized, network_params)(residual_gradient)
        output_change = linearized(gradients)  # d log alpha per unit step along the gradient
        length = jnp.vdot(residual, output_change) / jnp.maximum(jnp.vdot(output_change, output_change), 1e-30)
        scaled = jax.tree.map(lambda g: length * g, gradients)
        metrics["alpha_step_length"] = length
      alpha = _apply_gradients(train_state.replace(params=network_params), scaled)
      if self.alpha_rows:
        offsets = train_state.params["rows"]["log_alpha"]
        new_offsets = losses.row_offset_step(
            offsets[rows], network_log_alpha, divergence, state.kl_threshold,
            self.value(state, "alpha_dual_row_step"), log_bounds, max_violation, violation)
        metrics |= {"alpha_row_offset_mean": jnp.mean(offsets), "alpha_row_offset_std": jnp.std(offsets)}
        alpha = alpha.replace(params={**alpha.params, "rows": {"log_alpha": offsets.at[rows].set(new_offsets)}})
      return alpha, metrics

    return values, state_step

  @property
  def alpha_bounds(self) -> tuple[float, float]:
    """The range alpha(s) is projected onto: state-wise bounds, or (0, the global alpha's cap)."""
    if self.algo.alpha == "global":
      return 0.0, MULTIPLIER_MAXIMUM
    return self.algo.alpha_min, self.algo.alpha_max

  def multiplier_metrics(self, alpha: jax.Array, divergence: jax.Array, kl_threshold) -> Metrics:
    """Over the states given: alpha(s)'s mean and 10/50/90% quantiles, the share of states at
    each bound; the mean D(s) against eps_KL, the share of states above eps_KL and above
    1.2 eps_KL; and alpha(s) and D(s) among the states above eps_KL against the rest, and
    alpha(s)'s geometric mean above 1.2 eps_KL against at or below eps_KL, which show whether
    the multiplier rises where the constraint is broken."""
    lower, upper = self.alpha_bounds
    quantiles = jnp.quantile(alpha, jnp.array([0.1, 0.5, 0.9]))
    above = divergence > kl_threshold
    return {
        "alpha": jnp.mean(alpha),
        "alpha_q10": quantiles[0], "alpha_q50": quantiles[1], "alpha_q90": quantiles[2],
        "alpha_at_lower_bound": jnp.mean(alpha <= lower * 1.01),  # within 1%
        "alpha_at_upper_bound": jnp.mean(alpha >= upper / 1.01),
        "kl_over_threshold": jnp.mean(divergence) / kl_threshold,
        "kl_violation_fraction": jnp.mean(above),
        "kl_violation_fraction_1_2x": jnp.mean(divergence > 1.2 * kl_threshold),
        "alpha_above_threshold": _masked_mean(alpha, above),
        "alpha_below_threshold": _masked_mean(alpha, ~above),
        # Geometric means, which a few states at the upper bound do not dominate: above
        # 1.2 eps_KL against at or below eps_KL.
        "alpha_geomean_above_1_2x": jnp.exp(_masked_mean(jnp.log(alpha), divergence > 1.2 * kl_threshold)),
        "alpha_geomean_below_threshold": jnp.exp(_masked_mean(jnp.log(alpha), ~above)),
        "kl_above_threshold": _masked_mean(divergence, above),
        "kl_below_threshold": _masked_mean(divergence, ~above),
    }

  def _td_targets(self, state: BRACPlusState, batch: Transitions, key: jax.Array) -> jax.Array:
    algo = self.algo
    if algo.td_backup == "max":
      policy_params, num_samples = state.policy_target_params, algo.td_max_samples
    else:
      policy_params, num_samples = state.policy.params, 1
    next_actions, *_ = self._policy_samples(policy_params, batch.next_observations, key, num_samples)
    next_q = self._q_values(state.critic_target_params, batch.next_observations, next_actions)
    return losses.td_target(next_q, batch.rewards, batch.dones, self.value(state, "gamma"), algo.td_backup)

  def _polyak(self, state: BRACPlusState) -> BRACPlusState:
    tau = self.value(state, "tau")
    state = state.replace(
        critic_target_params=losses.polyak_update(state.critic.params, state.critic_target_params, tau))
    if self.algo.td_backup == "max":
      state = state.replace(
          policy_target_params=losses.polyak_update(state.policy.params, state.policy_target_params, tau))
    return state

  # -------------------------------------------------------------------------
  # Algorithm 1, lines 1-3: the start-up phases
  # -------------------------------------------------------------------------

  def behavior_step(self, state: BRACPlusState, batch: Transitions, key: jax.Array):
    """Line 1: maximum likelihood (the ELBO) for every behaviour VAE."""
    gradients, metrics = jax.grad(losses.behavior_loss, has_aux=True)(
        state.behavior.params, self.behavior, key, batch)
    return state.replace(behavior=_apply_gradients(state.behavior, gradients)), metrics

  def policy_init_step(self, state: BRACPlusState, batch: Transitions, key: jax.Array):
    """Line 2: pi = argmin KL(pi || pi_b), with the entropy dual active (App. F).

    One policy sample per state, as the released code's behaviour cloning step
    takes; the KL bound's samples only matter to the RL actor's estimate.
    """
    num_samples = 1 if self.algo.divergence == "kl" else None
    terms = self._policy_terms(state.behavior.params, batch.observations, key, num_samples)
    (actions, log_prob, divergence), pullback = jax.vjp(terms, state.policy.params)
    beta = state.entropy.apply_fn(state.entropy.params)
    (log_prob_gradients, divergence_gradients), metrics = jax.grad(
        lambda lp, d: losses.initial_policy_loss(d, lp, beta, self.algo.entropy_constraint),
        argnums=(0, 1), has_aux=True)(log_prob, divergence)
    (policy_gradients,) = pullback((jnp.zeros_like(actions), log_prob_gradients, divergence_gradients))
    entropy, entropy_metrics = self._entropy_step(state, log_prob)
    state = state.replace(policy=_apply_gradients(state.policy, policy_gradients), entropy=entropy)
    return state, metrics | entropy_metrics | _divergence_metrics(divergence)

  def critic_init_step(self, state: BRACPlusState, batch: Transitions, key: jax.Array):
    """Line 3: Q = Q^pi of the initial policy, by policy evaluation without the penalty."""
    targets = self._td_targets(state, batch, key)
    gradients, metrics = jax.grad(losses.critic_loss, has_aux=True)(
        state.critic.params, self.critic.apply, batch, targets)
    state = state.replace(critic=_apply_gradients(state.critic, gradients))
    return self._polyak(state), metrics

  def bc_step(self, state: BRACPlusState, batch: Transitions, key: jax.Array):
    """The behaviour-cloning baseline: one maximum-likelihood step of the same policy network
    on the dataset's actions, at the initial policy's learning rate (`algo.policy_init_lr`)."""
    del key  # the likelihood of the dataset's actions needs no samples

    def loss(policy_params):
      mean, std = self.policy.apply(policy_params, batch.observations)
      return losses.behavior_cloning_loss(mean, std, batch.actions)

    gradients, metrics = jax.grad(loss, has_aux=True)(state.policy.params)
    return state.replace(policy=_apply_gradients(state.policy, gradients)), metrics

  # -------------------------------------------------------------------------
  # Algorithm 1, lines 6-10: one RL update
  # -------------------------------------------------------------------------

  def update(self, state: BRACPlusState, batch: Transitions, key: jax.Array):
    """Critic (Eq. 10), actor (Eq. 8), alpha (line 8), beta (line 9), targets (line 10).

    The policy's samples and D(s) at the batch states come from one forward
    pass: the critic's gradient penalty reads them without gradient, and the
    actor differentiates them through the same pass's vjp.
    """
    algo = self.algo
    policy_key, target_key, behavior_key = jax.random.split(key, 3)
    metrics = {}
    if algo.behavior_steps_during_rl:  # released code: the VAEs keep learning
      state, behavior_metrics = self.behavior_step(state, batch, behavior_key)
      metrics |= behavior_metrics

    terms = self._policy_terms(state.behavior.params, batch.observations, policy_key)
    (actions, log_prob, divergence), policy_pullback = jax.vjp(terms, state.policy.params)
    fixed_divergence = jax.lax.stop_gradient(divergence)

    # Line 6: gradient-penalised policy evaluation.
    targets = self._td_targets(state, batch, target_key)
    penalty = {}
    if algo.gp_weighting != "off":
      # One a' ~ pi(.|s) per state estimates the penalty's expectation, as in the released
      # code; more samples (kept for the KL estimate) would multiply its double backprop.
      penalty = dict(
          policy_actions=jax.lax.stop_gradient(actions[:1]),
          penalty_weights=losses.gradient_penalty_weights(
              fixed_divergence, state.gp_threshold, algo.gp_weighting),
          penalty_scale=self._penalty_scale(state),
          per_head_actions=True)  # every head's action gradient in one backward pass
    critic_gradients, critic_metrics = jax.grad(losses.critic_loss, has_aux=True)(
        state.critic.params, self.critic.apply, batch, targets, **penalty)
    critic = _apply_gradients(state.critic, critic_gradients)
    metrics |= critic_metrics

    # Line 7: the actor, against the updated critic, with state-wise alpha(s) as constants.
    alpha_values, alpha_step = self.alpha_dual(state, batch.observations, fixed_divergence, batch.index)
    beta = state.entropy.apply_fn(state.entropy.params)

    def actor_objective(actions, log_prob, divergence):
      q_values = self._q_values(critic.params, batch.observations, actions)
      return losses.actor_loss(q_values, divergence, alpha_values, log_prob, beta, algo.entropy_constraint)

    actor_cotangents, actor_metrics = jax.grad(actor_objective, argnums=(0, 1, 2), has_aux=True)(
        actions, log_prob, divergence)
    (policy_gradients,) = policy_pullback(actor_cotangents)
    metrics |= actor_metrics
    # d(actor loss)/da = -grad_a min_j Q / (n N): the policy-action gradient norm comes free.
    q_action_gradients = -actor_cotangents[0] * math.prod(actions.shape[:2])
    metrics["policy_action_q_gradient_norm"] = jnp.mean(jnp.linalg.norm(q_action_gradients, axis=-1))

    # Line 8: the alpha dual step, on the same forward pass of the alpha network. Alg. 1 steps
    # alpha and beta (line 9) on the KL and entropy after the actor's step; these are the ones
    # measured before it, on this update's one pass of the policy and behaviour model: a
    # second pass after the actor's step would add both networks' forward passes to every
    # update for a change of one small policy step.
    alpha, alpha_metrics = alpha_step()
    metrics |= alpha_metrics | self.multiplier_metrics(alpha_values, fixed_divergence, state.kl_threshold)

    # Line 9: the entropy dual step.
    entropy, entropy_metrics = self._entropy_step(state, log_prob)
    metrics |= entropy_metrics

    gp_scale = state.gp_scale
    if algo.gp_lagrange and algo.gp_weighting != "off":
      gp_scale, scale_metrics = self._multiplier_step(
          gp_scale, lambda scale: losses.gradient_penalty_scale_loss(
              scale, critic_metrics["weighted_ood_gradient_norm"], self.value(state, "gp_max_ood_grad_norm")))
      metrics |= scale_metrics

    state = state.replace(
        critic=critic,
        policy=_apply_gradients(state.policy, policy_gradients),
        alpha=alpha,
        entropy=entropy,
        gp_scale=gp_scale,
        epoch_kl_moments=state.epoch_kl_moments + jnp.stack([
            fixed_divergence.size, jnp.sum(fixed_divergence), jnp.sum(fixed_divergence**2)]),
    )
    metrics |= _divergence_metrics(fixed_divergence)
    metrics["over_gp_threshold_fraction"] = jnp.mean(fixed_divergence > state.gp_threshold)
    return self._polyak(state), metrics  # line 10

  # -------------------------------------------------------------------------
  # Dataset-wide quantities, computed in chunks on the device
  # -------------------------------------------------------------------------

  def dataset_divergence(self, state: BRACPlusState, observations: jax.Array, key: jax.Array,
                         chunk_size: int = 4096) -> jax.Array:
    """D(pi(.|s), pi_b(.|s)) for every state [N], one chunk of states at a time."""

    def one_chunk(chunk, chunk_key):
      terms = self._policy_terms(state.behavior.params, chunk, chunk_key)
      return terms(state.policy.params)[2]

    return map_chunks(one_chunk, observations, chunk_size, key)

  def set_kl_threshold(self, state: BRACPlusState, observations: jax.Array, key: jax.Array):
    """eps_KL = the initial policy's mean D over the dataset + the task's margin for D (App. F)."""
    divergence = self.dataset_divergence(state, observations, key)
    # KL and MMD live on different scales (MMD^2 <= 2, and its root <= sqrt 2), so each has its
    # own margin.
    margin = self.value(state, "mmd_margin" if self.algo.divergence == "mmd" else "kl_margin")
    return state.replace(kl_threshold=jnp.mean(divergence) + margin), divergence

  def set_gp_threshold(self, state: BRACPlusState, observations: jax.Array, key: jax.Array,
                       use_dataset: bool = True):
    """eps_GP for the next epoch: mean + std of D (Sec. 3.3); returns (state, metrics).

    Over all dataset states (paper; `use_dataset`), or over the states of the
    batches this epoch's updates saw (released code). The dataset pass also
    gives the epoch's multiplier figures over every dataset state: alpha(s)'s
    quantiles, the share at each bound and the share above eps_KL.
    """
    metrics = {}
    if use_dataset:
      divergence = self.dataset_divergence(state, observations, key)
      threshold = losses.gradient_penalty_threshold(divergence)
      alpha = self.dataset_alpha(state, observations)
      metrics = {f"dataset_{name}": value for name, value in
                 self.multiplier_metrics(alpha, divergence, state.kl_threshold).items()}
    else:
      count, total, squares = state.epoch_kl_moments
      mean = total / count
      threshold = mean + jnp.sqrt(jnp.maximum(squares / count - mean**2, 0.0))
    return state.replace(gp_threshold=threshold, epoch_kl_moments=jnp.zeros(3)), metrics

  def critic_fit(self, state: BRACPlusState, observations: jax.Array, actions: jax.Array,
                 returns: jax.Array) -> Metrics:
    """min_j Q_j(s, a) at dataset rows against their discounted Monte-Carlo returns [N]:
    the correlation and the mean error (Q - G, in the training reward's units). Exact for
    the data's behaviour policy, so the initial critic (of a policy close to it) should
    match; a later critic evaluates another policy, and a growing error is its drift."""
    q_values = jnp.min(self.critic.apply(state.critic.params, observations, actions), axis=0)
    q_deviation, return_deviation = q_values - jnp.mean(q_values), returns - jnp.mean(returns)
    scale = jnp.sqrt(jnp.sum(q_deviation**2) * jnp.sum(return_deviation**2))
    # Pearson's correlation; 0 where either side is constant (logs refuse NaN).
    correlation = jnp.where(scale > 0, jnp.sum(q_deviation * return_deviation) / jnp.maximum(scale, 1e-30), 0.0)
    return {"q_mc_correlation": correlation,
            "q_mc_mean_error": jnp.mean(q_values - returns),
            "mc_return_mean": jnp.mean(returns)}

  def dataset_alpha(self, state: BRACPlusState, observations: jax.Array,
                    chunk_size: int = 4096) -> jax.Array:
    """alpha(s) at every state [N], one chunk of states at a time; the dataset's own rows, in
    order, with their row offsets (`alpha_dual`)."""
    if not self.alpha_rows:
      return map_chunks(lambda chunk: state.alpha.apply_fn(state.alpha.params, chunk), observations,
                        chunk_size)
    log_alpha = map_chunks(lambda chunk: state.alpha.apply_fn(
        {"params": state.alpha.params["params"]}, chunk, method="log_alpha"), observations, chunk_size)
    log_alpha = log_alpha + state.alpha.params["rows"]["log_alpha"]
    return jnp.exp(jnp.clip(log_alpha, math.log(self.algo.alpha_min), math.log(self.algo.alpha_max)))

  def set_target_entropy(self, state: BRACPlusState, batch: Transitions, key: jax.Array):
    """H0 where the config gives none, by the released code's rules: behaviour NLL -
    act_dim ln 4 (std_scale 4) for a maximum-entropy constraint, the behaviour NLL itself
    (std_scale 1) for a minimum-entropy one."""
    if self.algo.target_entropy is not None or "target_entropy" in state.hyper:
      return state
    _, metrics = losses.behavior_loss(state.behavior.params, self.behavior, key, batch)
    std_scale = 4.0 if self.algo.entropy_constraint == "max" else 1.0
    offset = state.hyper.get("target_entropy_offset", self.algo.get("target_entropy_offset", 0.0))
    return state.replace(target_entropy=metrics["behavior_nll_bound"] - self.action_dim * math.log(std_scale)
                         + offset)


def map_chunks(function, observations: jax.Array, chunk_size: int = 4096,
               key: jax.Array | None = None) -> jax.Array:
  """function(chunk [c, obs]) -> [c, ...] over all rows [N], c rows at a time (the last chunk
  padded), as one lax.map on the device; with `key`, function(chunk, chunk_key) gets one
  key of jax.random.split(key, number of chunks) per chunk."""
  num_states = observations.shape[0]
  chunk_size = min(chunk_size, num_states)
  num_chunks = -(-num_states // chunk_size)
  padded = jnp.pad(observations, ((0, num_chunks * chunk_size - num_states), (0, 0)), mode="edge")
  inputs = (padded.reshape((num_chunks, chunk_size, -1)),)
  if key is not None:
    inputs += (jax.random.split(key, num_chunks),)
  values = jax.lax.map(lambda chunk_inputs: function(*chunk_inputs), inputs)
  return values.reshape((num_chunks * chunk_size,) + values.shape[2:])[:num_states]


def damped_kernel_solve(kernel: jax.Array, residual: jax.Array, damping: float) -> jax.Array:
  """w = (K + lambda I)^-1 residual, lambda = damping x K's mean eigenvalue (its trace / N).

  J^T w is then the parameter step whose first-order change of the outputs, K w, is the
  ridge fit of `residual`: the damping keeps directions the network hardly moves (K's
  smallest eigenvalues) from taking long steps on a batch's noise.
  """
  ridge = damping * jnp.trace(kernel) / kernel.shape[0]
  return jnp.linalg.solve(kernel + ridge * jnp.eye(kernel.shape[0], dtype=kernel.dtype), residual)


def leverage_state_gain(kernel: jax.Array, damping: float, dataset_size: int) -> jax.Array:
  """g(s) [B]: how many updates pass, per update that moves it, for each batch state's own part
  of alpha(s), from the batch's tangent kernel K [B, B] (the dual step's own J J^T).

  In Alg. 1 every state's alpha(s) moves at every update. Here the part every state shares
  (the batch's mean violation) does, but a state's departure from it moves only when the
  batch holds the state or states the network does not tell apart from it. Which those are
  is in the centred kernel K_c = H K H (H = I - 11^T / B: the shared direction removed), and
  how many there are in its ridge fit's leverage, with the same relative damping as the
  step's solve:

    h_i = [K_c (K_c + lambda I)^-1]_ii,   lambda = damping x trace(K_c) / B.

  m batch states that share one direction have h = 1 / m each, so 1 / h_i - 1 counts the
  other batch states in state i's share: an unbiased estimate of the B - 1 draws' expected
  number, (B - 1) rho_i. At an update that need not hold state i, its share receives
  E_i = (1 / h_i - 1) B / (B - 1) + B / N batch states on average (B / N: the state itself),
  and its own part moves at the rate min(1, E_i) of the paper's. The gain restores it:

    g_i = 1 / clip(E_i, B / N, 1),   1 <= g_i <= N / B.

  A state the network spreads over many batch states (dense data, smooth features) keeps
  g = 1: its part already moves at every update. A state no other batch state shares
  (h -> 1) gets N / B, the rate of a table of alphas visited every N / B updates. Nothing
  here is tuned to a data size: N enters only through the state's own draw.
  """
  size = kernel.shape[0]
  centred = kernel - jnp.mean(kernel, axis=0, keepdims=True) - jnp.mean(kernel, axis=1, keepdims=True) + jnp.mean(kernel)
  centred = 0.5 * (centred + centred.T)
  ridge = jnp.maximum(damping * jnp.trace(centred) / size, jnp.finfo(kernel.dtype).tiny)
  # 1 - h_i = lambda [(K_c + lambda I)^-1]_ii, computed as such: near h = 1 (the states that
  # matter) 1 - h would round away.
  unexplained = jnp.clip(_ridge_unexplained(centred, ridge), 0.0, 1.0 - 1.0 / size)
  own_share = size / dataset_size
  exposure = unexplained / (1.0 - unexplained) * size / max(size - 1, 1) + own_share  # 1/h - 1 = (1-h)/h
  return jax.lax.stop_gradient(1.0 / jnp.clip(exposure, min(own_share, 1.0), 1.0))


@cache
def _blas_threads():
  from threadpoolctl import ThreadpoolController
  return ThreadpoolController()


def _ridge_unexplained_numpy(kernel: np.ndarray, ridge: np.ndarray) -> np.ndarray:
  kernel, ridge = np.asarray(kernel, np.float64), np.asarray(ridge, np.float64)
  damped = kernel + ridge[..., None, None] * np.eye(kernel.shape[-1])
  # One BLAS thread: called at every update while XLA's threads run, a threaded inverse
  # spends ~10x longer waiting for cores than computing.
  with _blas_threads().limit(limits=1, user_api="blas"):
    inverse = np.linalg.inv(damped)
  return (ridge[..., None] * np.diagonal(inverse, axis1=-2, axis2=-1)).astype(np.float32)


def _ridge_unexplained(kernel: jax.Array, ridge: jax.Array) -> jax.Array:
  """lambda diag((K + lambda I)^-1) [B] for a PSD K [B, B]. On CPUs by LAPACK in float64 through
  a callback (~1 ms for B = 256, where XLA's CPU triangular solves take ~100 ms; float64 also
  keeps the near-singular directions exact); elsewhere by Cholesky on the device."""

  def on_cpu(kernel, ridge):
    return jax.pure_callback(_ridge_unexplained_numpy, jax.ShapeDtypeStruct(kernel.shape[:-1], jnp.float32),
                             kernel, ridge, vmap_method="broadcast_all")

  return jax.lax.platform_dependent(kernel, ridge, cpu=on_cpu, default=_ridge_unexplained_cholesky)


def _ridge_unexplained_cholesky(kernel: jax.Array, ridge: jax.Array) -> jax.Array:
  size = kernel.shape[-1]
  factor = jnp.linalg.cholesky(kernel + ridge * jnp.eye(size, dtype=kernel.dtype))
  inverse_factor = jax.scipy.linalg.solve_triangular(factor, jnp.eye(size, dtype=kernel.dtype), lower=True)
  return ridge * jnp.sum(inverse_factor**2, axis=0)  # diag(L^-T L^-1)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """The mean of values where mask holds; 0 where it holds nowhere (logs refuse NaN)."""
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _divergence_metrics(divergence: jax.Array) -> Metrics:
  fixed = jax.lax.stop_gradient(divergence)
  return {"kl_mean": jnp.mean(fixed), "kl_std": jnp.std(fixed), "kl_max": jnp.max(fixed)}


# ---------------------------------------------------------------------------
# Many steps in one compiled call, and many seeds in one process
# ---------------------------------------------------------------------------


def scan_steps(step: Step, num_steps: int, batch_size: int):
  """(state, transitions, key) -> (state, metrics averaged over the steps), one lax.scan.

  Batches are drawn from the on-device transitions inside the scan.
  """

  def run(state, transitions: Transitions, key: jax.Array):
    def body(state, step_key):
      batch_key, update_key = jax.random.split(step_key)
      return step(state, transitions.sample(batch_key, batch_size), update_key)

    state, metrics = jax.lax.scan(body, state, jax.random.split(key, num_steps))
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  return run


def over_seeds(function):
  """vmaps (state, transitions, key, ...) -> ... over a leading seed axis of state and key;
  the transitions are shared by every seed."""
  return jax.vmap(function, in_axes=(0, None, 0))
