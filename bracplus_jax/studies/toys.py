"""bracplus toys: the paper's two appendix toys, one figure each.

  bracplus toys --out=<folder> [--seed=0]

writes gradient_penalty_toy.png (App. A, Fig. 4) and divergence_toy.png (App.
B, Fig. 5) into the folder; an existing file is never overwritten.

App. A fits y = 5 sin(pi x / 2) + noise on x ~ U(-0.8, 0.8) with a 64-unit
ReLU MLP, with and without a penalty on the squared input gradient at M = 100
out-of-distribution inputs x ~ U(-2, -0.8) u U(0.8, 2). The penalty is the
critic's own `losses.gradient_penalty`, with x as the action and an empty
observation. App. B draws forward KL(pi_x || pi_b), backward KL(pi_b || pi_x)
(the paper's names: forward is the policy-first KL that BRAC+ constrains) and
the Laplacian-kernel MMD between a behaviour density pi_b and pi_x = N(x, 0.2)
as x moves across [-10, 10].

Where the paper is silent or ambiguous, the choices here are:
  * N(m, s) means standard deviation s throughout, as the paper's own
    pi_theta = N(x, sigma) reads: noise std 0.5, mixture stds 0.3 and 0.5.
  * N = 100 in-distribution points (M = 100 is stated); 2,000 full-batch Adam
    steps, from the same initialisation with and without the penalty.
  * MMD: squared, kernel sigma 20 (wide next to pi_b, as the benchmark
    settings are: Adroit uses 120), 128 draws per distribution, the same draws
    for every x (common random numbers) so the curve is smooth.
  * x on a grid of step 0.1; KLs against the mixture by the trapezoid rule.

What the figures show: with the penalty the fit is flat beyond |x| = 1,
without it the fit keeps its slope. Forward KL has its minima at the two
modes; backward KL has one, at the mean of pi_b (0.25); MMD with a wide
Laplacian kernel has one near the median of pi_b (about 0.7): between the
modes, though nearer the heavier one than backward KL's.
"""

from __future__ import annotations

import math
import sys
from functools import partial
from typing import NamedTuple

from absl import flags
import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np
import optax

from bracplus_jax import distributions
from bracplus_jax import losses
from bracplus_jax import networks
from bracplus_jax.cli import exits_cleanly_on_input_errors, refuse_arguments, run_command
from bracplus_jax.errors import InputError
from bracplus_jax.studies.outputs import new_file_paths, png_bytes, write_new_file

# ---------------------------------------------------------------------------
# App. A, Fig. 4: a gradient penalty at out-of-distribution inputs
# ---------------------------------------------------------------------------

IN_DISTRIBUTION_BOUND = 0.8  # the paper's red lines
# Between the red and the blue lines both fits still generalise well (App. A).
GENERALISATION_BOUND = 1.0
OUT_OF_DISTRIBUTION_BOUND = 2.0
NOISE_STD = 0.5
NUM_POINTS = 100
NUM_OOD_POINTS = 100
PENALTY_SCALE = 0.1
LEARNING_RATE = 0.01
REGRESSION_STEPS = 2000
HIDDEN_DIMS = (64,)


class RegressionData(NamedTuple):
  inputs: jax.Array  # [N, 1], in distribution
  targets: jax.Array  # [N]
  ood_inputs: jax.Array  # [M, 1], where only the penalty looks


class RegressionFit(NamedTuple):
  """One trained regressor, read on the evaluation grid."""

  predictions: jax.Array  # [G]
  slopes: jax.Array  # [G], df/dx
  in_distribution_mse: jax.Array  # mean (f(x_i) - y_i)^2 over the training points


class GradientPenaltyToy(NamedTuple):
  penalty_scale: float
  data: RegressionData
  grid: jax.Array  # [G], evenly spaced over [-2, 2]
  penalised: RegressionFit
  unpenalised: RegressionFit


def true_function(x: jax.Array) -> jax.Array:
  return 5.0 * jnp.sin(0.5 * math.pi * x)


@partial(jax.jit, static_argnames=("num_points", "num_ood_points"))
def sample_regression_data(
    key: jax.Array, num_points: int = NUM_POINTS, num_ood_points: int = NUM_OOD_POINTS
) -> RegressionData:
  input_key, noise_key, magnitude_key, sign_key = jax.random.split(key, 4)
  inputs = jax.random.uniform(
      input_key, (num_points, 1), minval=-IN_DISTRIBUTION_BOUND, maxval=IN_DISTRIBUTION_BOUND
  )
  targets = true_function(inputs[:, 0]) + NOISE_STD * jax.random.normal(noise_key, (num_points,))
  # U(-2, -0.8) u U(0.8, 2) as a uniform magnitude with a fair random sign.
  magnitudes = jax.random.uniform(
      magnitude_key, (num_ood_points, 1), minval=IN_DISTRIBUTION_BOUND, maxval=OUT_OF_DISTRIBUTION_BOUND
  )
  ood_inputs = magnitudes * jax.random.rademacher(sign_key, (num_ood_points, 1), dtype=magnitudes.dtype)
  return RegressionData(inputs, targets, ood_inputs)


def regression_model() -> networks.MLP:
  return networks.MLP(HIDDEN_DIMS, 1)


def as_critic(params) -> losses.CriticFn:
  """The regressor in the critic's shape: one head, x as the action, the observation ignored."""
  model = regression_model()
  return lambda observations, actions: model.apply(params, actions)[None, ..., 0]


def no_observations(inputs: jax.Array) -> jax.Array:
  """Empty observations [..., 0] beside inputs [..., 1]: the regression has no state."""
  return jnp.zeros(inputs.shape[:-1] + (0,), inputs.dtype)


def regression_loss(
    params, data: RegressionData, penalty_scale: jax.Array | float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(1/N) sum_i (f(x_i) - y_i)^2 + lambda (1/M) sum_j ||df/dx(x_j)||^2 (App. A).

  The penalty is Eq. 10's, with every OOD input weighted 1 (one policy sample
  per "state").
  """
  critic = as_critic(params)
  predictions = critic(no_observations(data.inputs), data.inputs)[0]
  mse = jnp.mean((predictions - data.targets) ** 2)
  penalty, penalty_metrics = losses.gradient_penalty(
      critic,
      no_observations(data.ood_inputs),
      data.ood_inputs[None],
      jnp.ones(data.ood_inputs.shape[0]),
      penalty_scale,
  )
  return mse + penalty, {"mse": mse, **penalty_metrics}


def fit_regression(
    key: jax.Array, data: RegressionData, penalty_scale: jax.Array | float, num_steps: int = REGRESSION_STEPS
):
  """Full-batch Adam (lr 0.01) on `regression_loss`, all steps in one lax.scan.

  Returns the final parameters and the per-step metrics, each [num_steps].
  """
  params = regression_model().init(key, data.inputs)
  optimizer = optax.adam(LEARNING_RATE)

  def step(carry, _):
    params, optimizer_state = carry
    gradients, metrics = jax.grad(regression_loss, has_aux=True)(params, data, penalty_scale)
    updates, optimizer_state = optimizer.update(gradients, optimizer_state)
    return (optax.apply_updates(params, updates), optimizer_state), metrics

  (params, _), metrics = jax.lax.scan(step, (params, optimizer.init(params)), length=num_steps)
  return params, metrics


@partial(jax.jit, static_argnames="num_steps")
def fit_on_grid(
    key: jax.Array, data: RegressionData, grid: jax.Array, penalty_scale: jax.Array | float, num_steps: int
) -> RegressionFit:
  """Trains one regressor and reads its curve and slope df/dx (`losses.action_gradients`) on the grid.

  penalty_scale is traced, so the fits with and without the penalty share one
  compilation.
  """
  params, metrics = fit_regression(key, data, penalty_scale, num_steps)
  critic = as_critic(params)
  grid_inputs = grid[:, None]
  predictions = critic(no_observations(grid_inputs), grid_inputs)[0]
  slopes = losses.action_gradients(critic, no_observations(grid_inputs), grid_inputs)[0, :, 0]
  return RegressionFit(predictions, slopes, metrics["mse"][-1])


def gradient_penalty_toy(
    key: jax.Array,
    penalty_scale: float = PENALTY_SCALE,
    num_steps: int = REGRESSION_STEPS,
    grid_size: int = 401,
) -> GradientPenaltyToy:
  """Fig. 4: one data set, two fits from the same initialisation, with and without the penalty."""
  data_key, init_key = jax.random.split(key)
  data = sample_regression_data(data_key)
  grid = jnp.linspace(-OUT_OF_DISTRIBUTION_BOUND, OUT_OF_DISTRIBUTION_BOUND, grid_size)
  return GradientPenaltyToy(
      penalty_scale,
      data,
      grid,
      penalised=fit_on_grid(init_key, data, grid, jnp.float32(penalty_scale), num_steps),
      unpenalised=fit_on_grid(init_key, data, grid, jnp.float32(0.0), num_steps),
  )


# ---------------------------------------------------------------------------
# App. B, Fig. 5: where forward KL, backward KL and MMD are smallest
# ---------------------------------------------------------------------------

POLICY_STD = 0.2
POLICY_MEAN_BOUND = 10.0
MMD_KERNEL_SIGMA = 20.0
MMD_SAMPLES = 128
# Quadrature covers every policy N(x, 0.2), x in [-10, 10], to well past 5 std.
QUADRATURE_BOUND = 12.0
QUADRATURE_POINTS = 4801


class GaussianMixture(NamedTuple):
  """A 1-D mixture of Gaussians; the stds are standard deviations."""

  weights: tuple[float, ...]
  means: tuple[float, ...]
  stds: tuple[float, ...]

  def log_prob(self, x: jax.Array) -> jax.Array:
    """log density at x [...] -> [...]."""
    per_component = distributions.gaussian_log_prob(
        x[..., None, None], jnp.asarray(self.means)[:, None], jnp.asarray(self.stds)[:, None]
    )
    return jax.nn.logsumexp(per_component + jnp.log(jnp.asarray(self.weights)), axis=-1)

  def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
    """[num_samples, 1] draws, stratified: each component gets its share of them, in mirrored pairs.

    Fixed component counts take the largest source of noise out of a sampled
    curve; mirroring each draw about its component's mean keeps the draws of a
    symmetric density symmetric, so its sampled MMD curve is symmetric too.
    """
    pairs = num_samples // 2
    counts = np.round(np.asarray(self.weights) * pairs).astype(int)
    counts[-1] = pairs - counts[:-1].sum()
    components = np.repeat(np.arange(len(self.weights)), counts)
    noise = jax.random.normal(key, (pairs,))
    means, stds = np.asarray(self.means)[components], np.asarray(self.stds)[components]
    return jnp.concatenate([means + stds * noise, means - stds * noise])[:, None]


STANDARD_NORMAL = GaussianMixture(weights=(1.0,), means=(0.0,), stds=(1.0,))
TWO_MODES = GaussianMixture(weights=(0.3, 0.7), means=(-1.5, 1.0), stds=(0.3, 0.5))


class DivergenceCurves(NamedTuple):
  policy_means: jax.Array  # [X], the x of pi_x = N(x, 0.2)
  forward_kl: jax.Array  # [X], KL(pi_x || pi_b)
  backward_kl: jax.Array  # [X], KL(pi_b || pi_x)
  mmd: jax.Array  # [X], squared Laplacian-kernel MMD


def quadrature_points() -> jax.Array:
  return jnp.linspace(-QUADRATURE_BOUND, QUADRATURE_BOUND, QUADRATURE_POINTS)


def kl_by_quadrature(log_p: jax.Array, log_q: jax.Array, points: jax.Array) -> jax.Array:
  """KL(p || q) = int p (log p - log q) by the trapezoid rule over points [G]; log densities [..., G]."""
  return jax.scipy.integrate.trapezoid(jnp.exp(log_p) * (log_p - log_q), points, axis=-1)


def policy_log_probs(policy_means: jax.Array, points: jax.Array) -> jax.Array:
  """log N(point; x, 0.2) for every x [X] and point [G] -> [X, G]."""
  return distributions.gaussian_log_prob(points[None, :, None], policy_means[:, None, None], POLICY_STD)


@partial(jax.jit, static_argnames="behavior")
def forward_kl_by_quadrature(behavior: GaussianMixture, policy_means: jax.Array) -> jax.Array:
  points = quadrature_points()
  return kl_by_quadrature(policy_log_probs(policy_means, points), behavior.log_prob(points), points)


@partial(jax.jit, static_argnames="behavior")
def backward_kl_by_quadrature(behavior: GaussianMixture, policy_means: jax.Array) -> jax.Array:
  points = quadrature_points()
  return kl_by_quadrature(behavior.log_prob(points), policy_log_probs(policy_means, points), points)


@partial(jax.jit, static_argnames="behavior")
def behavior_density(behavior: GaussianMixture, points: jax.Array) -> jax.Array:
  return jnp.exp(behavior.log_prob(points))


def mmd_curve(key: jax.Array, behavior: GaussianMixture, policy_means: jax.Array) -> jax.Array:
  """`losses.mmd_laplacian` between N(x, 0.2) and pi_b for every x [X], with the same draws for every x."""
  policy_key, behavior_key = jax.random.split(key)
  policy_noise = STANDARD_NORMAL.sample(policy_key, MMD_SAMPLES)
  behavior_samples = behavior.sample(behavior_key, MMD_SAMPLES)
  return jax.lax.map(
      lambda mean: losses.mmd_laplacian(mean + POLICY_STD * policy_noise, behavior_samples, MMD_KERNEL_SIGMA),
      policy_means,
      batch_size=16,
  )


@partial(jax.jit, static_argnames=("behavior", "grid_size"))
def divergence_curves(key: jax.Array, behavior: GaussianMixture, grid_size: int = 201) -> DivergenceCurves:
  """Fig. 5, one panel: the three divergences against x in [-10, 10].

  KL is closed form (`distributions.gaussian_kl`) when pi_b is one Gaussian,
  and by quadrature otherwise.
  """
  policy_means = jnp.linspace(-POLICY_MEAN_BOUND, POLICY_MEAN_BOUND, grid_size)
  if len(behavior.weights) == 1:
    (behavior_mean,), (behavior_std,) = behavior.means, behavior.stds
    policy = (policy_means[:, None], jnp.full((grid_size, 1), POLICY_STD))
    target = (jnp.full((grid_size, 1), behavior_mean), jnp.full((grid_size, 1), behavior_std))
    forward_kl = distributions.gaussian_kl(*policy, *target)
    backward_kl = distributions.gaussian_kl(*target, *policy)
  else:
    forward_kl = forward_kl_by_quadrature(behavior, policy_means)
    backward_kl = backward_kl_by_quadrature(behavior, policy_means)
  return DivergenceCurves(policy_means, forward_kl, backward_kl, mmd_curve(key, behavior, policy_means))


def local_minima(values: np.ndarray) -> np.ndarray:
  """Indices of the interior local minima; a flat bottom of equal values counts once.

  A minimum that falls between two grid points can give them equal values, so a
  point need only not exceed its left neighbour while staying below its right.
  """
  values = np.asarray(values)
  inner = values[1:-1]
  return np.flatnonzero((inner <= values[:-2]) & (inner < values[2:])) + 1


# ---------------------------------------------------------------------------
# Figures and the command
# ---------------------------------------------------------------------------

GRADIENT_PENALTY_FIGURE = "gradient_penalty_toy.png"
DIVERGENCE_FIGURE = "divergence_toy.png"
# The paper's colours for Fig. 5.
DIVERGENCE_COLORS = {"forward_kl": "tab:orange", "backward_kl": "tab:blue", "mmd": "tab:green"}
DIVERGENCE_LABELS = {
    "forward_kl": r"forward KL$(\pi_x \,\|\, \pi_b)$",
    "backward_kl": r"backward KL$(\pi_b \,\|\, \pi_x)$",
    "mmd": r"MMD$^2$, Laplacian kernel",
}


def gradient_penalty_figure(toy: GradientPenaltyToy) -> Figure:
  """Fig. 4: the data, where the penalty looks, and both fits."""
  figure = Figure(figsize=(7.0, 4.5), layout="constrained")
  axes = figure.subplots()
  grid = np.asarray(toy.grid)
  axes.scatter(np.asarray(toy.data.inputs[:, 0]), np.asarray(toy.data.targets), s=10, color="0.5",
               label=f"training data (N = {toy.data.inputs.shape[0]})")
  axes.plot(grid, np.asarray(true_function(toy.grid)), color="0.2", linestyle=":", label=r"$5 \sin(\pi x / 2)$")
  axes.plot(grid, np.asarray(toy.unpenalised.predictions), color="tab:orange", label="without gradient penalty")
  axes.plot(grid, np.asarray(toy.penalised.predictions), color="tab:blue",
            label=rf"with gradient penalty ($\lambda$ = {toy.penalty_scale:g})")
  bottom = min(np.min(np.asarray(toy.unpenalised.predictions)), np.min(np.asarray(toy.data.targets))) - 0.5
  axes.plot(np.asarray(toy.data.ood_inputs[:, 0]), np.full(toy.data.ood_inputs.shape[0], bottom), "|",
            color="tab:red", markersize=8, label=f"penalised inputs (M = {toy.data.ood_inputs.shape[0]})")
  for bound, color, label in (
      (IN_DISTRIBUTION_BOUND, "tab:red", "edge of the training inputs"),
      (GENERALISATION_BOUND, "tab:blue", "where the fits stop generalising"),
  ):
    for side in (-1.0, 1.0):
      axes.axvline(side * bound, color=color, linewidth=0.8, alpha=0.6, label=label if side > 0 else None)
  axes.set(xlabel="x", ylabel="f(x)", xlim=(-OUT_OF_DISTRIBUTION_BOUND, OUT_OF_DISTRIBUTION_BOUND),
           title="Gradient penalty at out-of-distribution inputs (App. A, Fig. 4)")
  axes.legend(fontsize="small", loc="upper left")
  return figure


def divergence_figure(key: jax.Array) -> Figure:
  """Fig. 5: the three divergences against x (log scale), pi_b in black; dots mark local minima."""
  figure = Figure(figsize=(12.0, 4.5), layout="constrained")
  panels = figure.subplots(1, 2)
  for axes, behavior, title in (
      (panels[0], STANDARD_NORMAL, r"$\pi_b = N(0, 1)$"),
      (panels[1], TWO_MODES, r"$\pi_b = 0.3\,N(-1.5, 0.3) + 0.7\,N(1, 0.5)$"),
  ):
    curves = divergence_curves(key, behavior)
    policy_means = np.asarray(curves.policy_means)
    for name, color in DIVERGENCE_COLORS.items():
      values = np.asarray(getattr(curves, name))
      axes.semilogy(policy_means, values, color=color, label=DIVERGENCE_LABELS[name])
      minima = local_minima(values)
      axes.plot(policy_means[minima], values[minima], "o", color=color, markersize=4)
    density_axes = axes.twinx()
    points = np.linspace(-POLICY_MEAN_BOUND, POLICY_MEAN_BOUND, 2001)
    density_axes.plot(points, np.asarray(behavior_density(behavior, points)), color="black",
                      label=r"$\pi_b$ density")
    density_axes.set_ylim(bottom=0.0)
    density_axes.set_ylabel(r"$\pi_b(x)$")
    axes.set(xlabel=r"x, the mean of $\pi_x = N(x, 0.2)$", ylabel="divergence", title=title,
             xlim=(-POLICY_MEAN_BOUND, POLICY_MEAN_BOUND))
  handles = panels[0].get_legend_handles_labels()[0] + density_axes.get_legend_handles_labels()[0]
  figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
  figure.suptitle(f"Divergence shapes (App. B, Fig. 5); MMD with kernel sigma {MMD_KERNEL_SIGMA:g}, "
                  f"{MMD_SAMPLES} samples each")
  return figure


def make_figures(out_dir: str, seed: int = 0) -> list[str]:
  """Draws Fig. 4 and Fig. 5 into out_dir and returns their paths; never overwrites a file."""
  paths = new_file_paths(out_dir, (GRADIENT_PENALTY_FIGURE, DIVERGENCE_FIGURE))
  regression_key, divergence_key = jax.random.split(jax.random.key(seed))
  figures = (gradient_penalty_figure(gradient_penalty_toy(regression_key)), divergence_figure(divergence_key))
  for path, figure in zip(paths, figures):
    write_new_file(path, png_bytes(figure))
  return paths


def define_flags() -> None:
  """Only when run as a program: `bracplus_jax.collection.collect` defines flags of the same names."""
  flags.DEFINE_string("out", None, "The folder to draw the figures into; their files must not exist yet.")
  flags.DEFINE_integer("seed", 0, "Seed of the regression data, its initialisation and the MMD samples.")


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  refuse_arguments(argv)
  if not flags.FLAGS.out:
    raise InputError("--out: missing; expected the folder to draw the figures into")
  for path in make_figures(flags.FLAGS.out, flags.FLAGS.seed):
    print(f"wrote {path}")


if __name__ == "__main__":
  run_command(sys.modules[__name__])
