"""Flax modules for BRAC+: policy, twin critic, behaviour VAE ensemble, multipliers.

Architectures follow App. F of the paper. Ensembles (the two Q heads, the B
behaviour VAEs) are one `nn.vmap`ped module each, so their parameters are
stacked along a leading member axis and every member runs in one batched
matmul. The critic's and the VAEs' first layers take their inputs as parts
(`ConcatDense`): a state's observation, shared by its policy samples and latent
draws, is passed once per state with size-1 axes and multiplied once per state.

The policy, critic and behaviour modules take `matmul_dtype`: "float32"
(default) or "bfloat16", which rounds each layer's matmul operands to bfloat16
and sums the products in float32, in the forward pass and in the backward
pass to the layer's input (`layer_matmul`). Parameters, activations,
weight gradients, optimiser states and the short contractions run as
elementwise multiply-adds (at most 8 inputs per output: the latents', the
actions') stay float32. On CPUs with AMX and on GPUs such products run several
times faster; they carry bfloat16's 8-bit mantissa, so results differ from
float32's by more than rounding noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

# Released code: scale = softplus(clip(raw, -10, 5)) for the policy (option
# "released") and for both halves of the behaviour VAE.
RAW_SCALE_MIN = -10.0
RAW_SCALE_MAX = 5.0

# Paper policy: the SAC head it cites (Haarnoja et al. 2018a) predicts log-std
# and clips it to [-20, 2]; the same bounds are used here.
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


def _inverse_softplus(value: float) -> float:
  return value + math.log(-math.expm1(-value))


def _bounded_softplus_scale(raw: jax.Array) -> jax.Array:
  return jax.nn.softplus(jnp.clip(raw, RAW_SCALE_MIN, RAW_SCALE_MAX))


def _mean_and_bounded_scale(outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean, softplus(clip(raw))) from a Gaussian head's outputs [..., 2 d] = [mean, raw].

  The scale is computed over the whole flattened output and then sliced: XLA's CPU loops
  vectorise along the minor axis, d = 3 or 6 wide here, so the softplus of [..., d] runs
  one element at a time; flat, it runs at full vector width, twice the values 16 at a time.
  """
  mean, _ = jnp.split(outputs, 2, axis=-1)
  flat_scales = _bounded_softplus_scale(outputs.reshape(-1))
  _, std = jnp.split(flat_scales.reshape(outputs.shape), 2, axis=-1)
  return mean, std


MATMUL_DTYPES = ("float32", "bfloat16")


def _layer_contraction(x: jax.Array, transposed: bool = False):
  """dot_general's dimension numbers of x [..., k] . w [k, n], or . w [n, k] transposed."""
  return ((x.ndim - 1,), (1 if transposed else 0,)), ((), ())


def _takes_bfloat16(x_shape: tuple[int, ...], outer: int) -> bool:
  """Whether a product of x [..., k] and a weight of n = `outer` columns runs in bfloat16.
  XLA's CPU backend takes bfloat16 operands with float32 sums only in its YNNPACK kernels,
  and those refuse matrix-vector products and products of dimensions all under 8 (its
  generic kernel would fail at run time); such products are a negligible share of the
  FLOPs and stay float32."""
  rows, inner = math.prod(x_shape[:-1]), x_shape[-1]
  return min(rows, outer) > 1 and max(rows, inner, outer) >= 8


# Where allowed (`narrow`: a first hidden layer's inputs, and every backward pass to a
# layer's input), products with at most this many inputs per output run as that many
# multiply-adds in an elementwise loop, which XLA fuses with the bias, the sum of
# ConcatDense's parts and the ReLU: a matmul kernel of so short a contraction runs at a
# few percent of its peak and writes an output that the next kernel reads again. Not in a
# later layer: XLA may recompute an elementwise value in each fusion that reads it, and a
# network output computed two ways breaks the min over Q heads, whose gradient divides by
# the number of heads equal to the min (0 of them: NaN).
NARROW_CONTRACTION_MAX = 8


def _narrow_product(x: jax.Array, w: jax.Array) -> jax.Array:
  return sum((x[..., k:k + 1] * w[k] for k in range(1, x.shape[-1])), x[..., :1] * w[0])


def _product(x: jax.Array, w: jax.Array, dtype: str, transposed: bool, narrow: bool) -> jax.Array:
  if narrow and x.shape[-1] <= NARROW_CONTRACTION_MAX:
    # float32 in either dtype: rounding the operands to bfloat16 would buy no speed in an
    # elementwise loop, and the fusion that rounded them (along a 6-wide last axis, one
    # element at a time) cost the bfloat16 initial-policy step about 10%.
    return _narrow_product(x, w.T if transposed else w)
  if transposed and dtype == "float32" and 1 in x.shape[:-1]:
    # A unit axis in x (a behaviour decoder's single latent draw) makes XLA's CPU backend
    # write out w's transpose for this product, a strided copy per step; without it the
    # product contracts w's minor axis in place (the released preset's behaviour step:
    # 1.13x side by side). Not in bfloat16, where the update ran about 5% slower without it.
    leading = x.shape[:-1]
    squeezed = x.reshape(tuple(size for size in leading if size != 1) + x.shape[-1:])
    return _product(squeezed, w, dtype, transposed, narrow).reshape(leading + w.shape[:1])
  contraction = _layer_contraction(x, transposed)
  if dtype == "bfloat16" and _takes_bfloat16(x.shape, w.shape[0 if transposed else 1]):
    return lax.dot_general(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), contraction,
                           preferred_element_type=jnp.float32)
  return lax.dot_general(x, w, contraction)


# A weight gradient of at most this many columns (a network's head: a Q value, a Gaussian's
# mean and scale) is taken as the transpose of a product with that many rows.
NARROW_GRADIENT_COLUMNS_MAX = 16


def _row_contraction(left: jax.Array, right: jax.Array) -> jax.Array:
  """left [rows, a]^T right [rows, b] -> [a, b].

  With few columns b, XLA's CPU backend runs the product as written (both operands
  contracted along their major axis, an Eigen kernel) at a few GFLOP/s; as the transpose
  of right^T left, a product whose output rows are b wide, it runs in its YNNPACK kernels
  several times faster (a head's [256, 6] gradient over 300 rows: about 4x), and the
  transpose of a [b, a] result is a few thousand numbers.
  """
  rows = (((0,), (0,)), ((), ()))
  if right.shape[-1] <= NARROW_GRADIENT_COLUMNS_MAX:
    return lax.dot_general(right.T, left, (((1,), (0,)), ((), ()))).T
  return lax.dot_general(left, right, rows)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def layer_matmul(x: jax.Array, w: jax.Array, dtype: str = "float32", transposed: bool = False,
                 narrow: bool = False) -> jax.Array:
  """x [..., k] @ w [k, n] -> float32 [..., n]: a Dense layer's product (`transposed`:
  x @ w.T for w [n, k], which the backward pass to the input takes, contracting w's minor
  axis in place: a written-out transpose cost a strided copy of every weight matrix).

  dtype "bfloat16": both operands rounded to bfloat16, products summed in float32, in the
  forward pass and in the backward pass to x (matrix-vector products stay float32, see
  `_takes_bfloat16`). The backward pass to w is float32 in both, and written so that the
  gradient comes out as [k, n]: JAX's own rule takes it as the transpose of a [n, k]
  product, and XLA's CPU backend then folds that transpose into the optimiser's
  elementwise update, a strided loop that costs more than the update itself (without it
  the released preset's behaviour step runs about 1.2x faster, with the same numbers up
  to summation order); only a gradient of a few columns is taken transposed
  (`_row_contraction`). With `narrow`, contractions of at most NARROW_CONTRACTION_MAX run
  as elementwise multiply-adds, in float32 in either dtype; the backward pass to x always
  allows it.
  """
  return _product(x, w, dtype, transposed, narrow)


def _layer_matmul_forward(x, w, dtype, transposed, narrow):
  return _product(x, w, dtype, transposed, narrow), (x, w)


def _layer_matmul_backward(dtype, transposed, narrow, residuals, cotangent):
  del narrow  # the forward's choice; the input gradient below feeds only other gradients
  # The input's gradient calls layer_matmul itself, so that the gradient penalty's second
  # backward pass through it takes the same route (and, for bfloat16, stays bfloat16:
  # JAX's own rule would take it in float32, for the cotangent is float32).
  x, w = residuals
  flat_x, flat_cotangent = x.reshape(-1, x.shape[-1]), cotangent.reshape(-1, cotangent.shape[-1])
  # The weight's gradient in the weight's own layout, [k, n] (or [n, k] transposed).
  left, right = (flat_cotangent, flat_x) if transposed else (flat_x, flat_cotangent)
  weight_gradient = _row_contraction(left, right)
  input_gradient = layer_matmul(cotangent, w, dtype, not transposed, True)
  return input_gradient.astype(x.dtype), weight_gradient.astype(w.dtype)


layer_matmul.defvjp(_layer_matmul_forward, _layer_matmul_backward)


def bfloat16_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """`layer_matmul` with bfloat16 operands."""
  return layer_matmul(x, w, "bfloat16")


def dense(features: int, matmul_dtype: str = "float32", narrow: bool = False, **kwargs) -> nn.Dense:
  """nn.Dense on `layer_matmul` in `matmul_dtype` (parameters stay float32 and keep their names;
  `narrow`: see NARROW_CONTRACTION_MAX)."""
  if matmul_dtype not in MATMUL_DTYPES:
    raise ValueError(f"unknown matmul dtype {matmul_dtype!r}; expected one of {MATMUL_DTYPES}")

  def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    del precision, preferred_element_type
    if dimension_numbers != _layer_contraction(lhs):
      raise ValueError(f"layer_matmul takes a Dense layer's contraction, got {dimension_numbers}")
    return layer_matmul(lhs, rhs, matmul_dtype, False, narrow)

  return nn.Dense(features, dot_general=dot_general, **kwargs)


class ConcatDense(nn.Module):
  """nn.Dense on the concatenation of `parts` along their last axis, without concatenating.

  Each part is multiplied by its own rows of the kernel at the part's own leading
  shape, and the products broadcast in the sum. A part that many rows share, such as
  a state's observation under its policy samples and latent draws ([N, 1, 1, obs]
  beside [N, n, L, z]), is multiplied once per state instead of once per row, and no
  concatenated copy is written. Parts of one leading shape are concatenated and take one
  product, as nn.Dense would. Parameters are nn.Dense's: `kernel` [sum of widths,
  features] (rows in the parts' order) and `bias`, with its initialisers.
  """

  features: int
  matmul_dtype: str = "float32"
  narrow: bool = False  # see NARROW_CONTRACTION_MAX

  @nn.compact
  def __call__(self, parts: Sequence[jax.Array]) -> jax.Array:
    widths = [part.shape[-1] for part in parts]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (sum(widths), self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    if len({part.shape[:-1] for part in parts}) == 1:  # nothing shared: one product is cheaper
      return layer_matmul(jnp.concatenate(parts, axis=-1), kernel, self.matmul_dtype, False, self.narrow) + bias
    starts = [sum(widths[:index]) for index in range(len(widths))]
    products = [layer_matmul(part, kernel[start:start + width], self.matmul_dtype, False, self.narrow)
                for part, start, width in zip(parts, starts, widths)]
    return sum(products[1:], products[0]) + bias


class MLP(nn.Module):
  """ReLU after every hidden layer, linear output. The input is one array, or a tuple of
  arrays that the first layer reads as their concatenation (`ConcatDense`)."""

  hidden_dims: Sequence[int]
  output_dim: int
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array | tuple[jax.Array, ...]) -> jax.Array:
    widths = (*self.hidden_dims, self.output_dim)
    for index, width in enumerate(widths):
      narrow = index == 0 and len(self.hidden_dims) > 0  # a first hidden layer's inputs
      if isinstance(x, tuple):
        x = ConcatDense(width, self.matmul_dtype, narrow=narrow, name=f"Dense_{index}")(x)
      else:
        x = dense(width, self.matmul_dtype, narrow=narrow, name=f"Dense_{index}")(x)
      if index < len(self.hidden_dims):
        x = nn.relu(x)
    return x


class TanhGaussianPolicy(nn.Module):
  """pi(a|s): a diagonal Gaussian in pre-tanh space, squashed by tanh (App. F).

  Returns (mean, std) of the pre-tanh Gaussian; sampling and log-densities are
  in `distributions`. `scale` picks how std is produced:
    "paper":    std = exp(clip(log_std, -20, 2)), the SAC parameterisation.
    "released": std = softplus(clip(raw, -10, 5)), the authors' released code.
  """

  action_dim: int
  hidden_dims: Sequence[int] = (512, 512, 512)
  scale: str = "paper"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
    outputs = MLP(self.hidden_dims, 2 * self.action_dim, self.matmul_dtype, name="trunk")(observations)
    mean, raw_scale = jnp.split(outputs, 2, axis=-1)
    if self.scale == "paper":
      std = jnp.exp(jnp.clip(raw_scale, LOG_STD_MIN, LOG_STD_MAX))
    elif self.scale == "released":
      std = _bounded_softplus_scale(raw_scale)
    else:
      raise ValueError(f"unknown policy scale {self.scale!r}; expected 'paper' or 'released'")
    return mean, std


class QNetwork(nn.Module):
  """One Q(s, a) MLP; returns [...] for observations and actions whose leading dims
  broadcast to [...] (a state's observation under its [n, N] policy samples: [N, obs])."""

  hidden_dims: Sequence[int] = (256, 256, 256)
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
    return MLP(self.hidden_dims, 1, self.matmul_dtype, name="mlp")((observations, actions))[..., 0]


class TwinCritic(nn.Module):
  """Two independent Q networks as one vmapped module (App. F).

  Parameters carry a leading head axis of size 2 under `params["heads"]`; a
  call returns Q-values of shape [2, ...]. With `per_head_actions`, actions
  carry a head axis too ([2, ..., act]) and head j reads actions[j]: what the
  gradient penalty needs to take every head's action gradient in one backward
  pass.
  """

  hidden_dims: Sequence[int] = (256, 256, 256)
  matmul_dtype: str = "float32"
  num_heads = 2

  @nn.compact
  def __call__(self, observations: jax.Array, actions: jax.Array, per_head_actions: bool = False) -> jax.Array:
    heads = nn.vmap(
        QNetwork,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(None, 0) if per_head_actions else None,
        out_axes=0,
        axis_size=self.num_heads,
    )(self.hidden_dims, self.matmul_dtype, name="heads")
    return heads(observations, actions)


class ConditionalVAE(nn.Module):
  """One behaviour model: encoder q(z|s,u) and decoder p(u|s,z), both diagonal Gaussians.

  u is the pre-tanh action. Scales are softplus(clip(raw, -10, 5)) as in the
  released code (the paper does not state them).
  """

  action_dim: int
  latent_dim: int
  hidden_dims: Sequence[int] = (512, 512, 512)
  matmul_dtype: str = "float32"

  def setup(self):
    self.encoder = MLP(self.hidden_dims, 2 * self.latent_dim, self.matmul_dtype)
    self.decoder = MLP(self.hidden_dims, 2 * self.action_dim, self.matmul_dtype)

  def encode(self, observations: jax.Array, pre_tanh_actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, std) of the approximate posterior q(z|s,u)."""
    outputs = self.encoder((pre_tanh_actions, observations))
    return _mean_and_bounded_scale(outputs)

  def decode(self, observations: jax.Array, latents: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, std) of the decoder p(u|s,z)."""
    outputs = self.decoder((latents, observations))
    return _mean_and_bounded_scale(outputs)

  def __call__(
      self, observations: jax.Array, pre_tanh_actions: jax.Array, noise: jax.Array
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Encode, draw z = mean + std * noise, decode.

    Returns (posterior_mean, posterior_std, decoder_mean, decoder_std).
    """
    posterior_mean, posterior_std = self.encode(observations, pre_tanh_actions)
    latents = posterior_mean + posterior_std * noise
    decoder_mean, decoder_std = self.decode(observations, latents)
    return posterior_mean, posterior_std, decoder_mean, decoder_std


class BehaviorVAEEnsemble(nn.Module):
  """B conditional VAEs as one vmapped module (App. F: B = 3).

  Every method takes inputs with a leading member axis [B', ...] and maps
  member i's inputs through member i; parameters sit under
  `params["members"]` with leading axis B = `ensemble_size` (initialise with
  inputs stacked `ensemble_size` times, e.g. by `broadcast_to_members`). B' is
  read from the inputs, so the same module also runs a slice of the members
  (see `slice_members`): that is how one chosen member is evaluated at the
  cost of one member.
  """

  action_dim: int
  latent_dim: int
  hidden_dims: Sequence[int] = (512, 512, 512)
  ensemble_size: int = 3
  matmul_dtype: str = "float32"

  def setup(self):
    members = nn.vmap(
        ConditionalVAE,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=0,
        out_axes=0,
        methods=["__call__", "encode", "decode"],
    )
    self.members = members(self.action_dim, self.latent_dim, self.hidden_dims, self.matmul_dtype)

  def encode(self, observations: jax.Array, pre_tanh_actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-member (mean, std) of q(z|s,u); inputs and outputs [B', ...]."""
    return self.members.encode(observations, pre_tanh_actions)

  def decode(self, observations: jax.Array, latents: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-member (mean, std) of p(u|s,z); inputs and outputs [B', ...]."""
    return self.members.decode(observations, latents)

  def __call__(
      self, observations: jax.Array, pre_tanh_actions: jax.Array, noise: jax.Array
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-member ConditionalVAE.__call__; inputs and outputs [B', ...]."""
    return self.members(observations, pre_tanh_actions, noise)

  def member(self) -> ConditionalVAE:
    """The single-member module that `member_variables` plugs into."""
    return ConditionalVAE(self.action_dim, self.latent_dim, self.hidden_dims, self.matmul_dtype, parent=None)


def broadcast_to_members(tree, ensemble_size: int):
  """Give every ensemble member the same inputs: [...] -> [ensemble_size, ...]."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (ensemble_size,) + jnp.shape(x)), tree)


def slice_members(variables, start: jax.Array | int, size: int = 1):
  """Members [start, start + size) of stacked ensemble variables, leading axis kept.

  `start` may be traced (a random member inside jit); only the slice is read.
  """
  return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=0), variables)


def member_variables(variables, index: jax.Array | int):
  """One member's variables, laid out for `BehaviorVAEEnsemble.member()`."""
  members = {collection: tree["members"] for collection, tree in variables.items()}
  return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index, axis=0, keepdims=False), members)


@flax.struct.dataclass
class MemberAssignment:
  """Rows of a batch dealt out to ensemble members, one member per row.

  The rows, padded with repeats to a multiple of B, are shuffled and cut into
  B equal chunks; chunk i goes to member i. Every row's member is
  uniform over the ensemble, and the ensemble evaluates ceil(N / B) rows per
  member: one random member per state costs one member's compute, not B.
  """

  order: jax.Array  # [B * rows_per_member] row indices, chunk i is member i's
  position: jax.Array  # [N] where each row sits in `order`
  ensemble_size: int = flax.struct.field(pytree_node=False)

  @classmethod
  def random(cls, key: jax.Array, num_rows: int, ensemble_size: int) -> "MemberAssignment":
    num_slots = ensemble_size * (-(-num_rows // ensemble_size))
    # Padding slots are shuffled in with the rows, so no member is short of real rows.
    slot_contents = jax.random.permutation(key, num_slots)
    order = jnp.where(slot_contents < num_rows, slot_contents, slot_contents - num_rows)
    slot_of = jnp.zeros(num_slots, jnp.int32).at[slot_contents].set(jnp.arange(num_slots, dtype=jnp.int32))
    return cls(order=order, position=slot_of[:num_rows], ensemble_size=ensemble_size)

  @property
  def rows_per_member(self) -> int:
    return self.order.shape[0] // self.ensemble_size

  @property
  def member_of_row(self) -> jax.Array:
    """[N] the member each row was dealt to."""
    return self.position // self.rows_per_member

  def to_members(self, tree):
    """Rows [N, ...] -> member-stacked [B, rows_per_member, ...]."""

    def deal(x):
      return jnp.take(x, self.order, axis=0).reshape((self.ensemble_size, self.rows_per_member) + x.shape[1:])

    return jax.tree.map(deal, tree)

  def from_members(self, tree):
    """Member-stacked [B, rows_per_member, ...] -> rows [N, ...], padding dropped."""

    def collect(x):
      return jnp.take(x.reshape((-1,) + x.shape[2:]), self.position, axis=0)

    return jax.tree.map(collect, tree)


class StateAlpha(nn.Module):
  """alpha(s) > 0: the state-wise KL multiplier network (Sec. 3.2, App. F), in log space.

  The network's output is log alpha(s), kept inside [log minimum, log maximum]
  (the dual step's projection). Its last layer starts at zero, so alpha(s) =
  `initial` in every state at the start (the paper gives no start; the released
  code's global alpha starts at 10). A start below the entropy multiplier would
  let the actor's entropy term outweigh the KL term's and collapse the policy
  before the dual step reacts. `log_alpha` is the unclipped output that the dual
  step regresses; `__call__` is alpha(s).
  """

  hidden_dims: Sequence[int] = (256, 256, 256)
  initial: float = 10.0
  minimum: float = 1e-3
  maximum: float = 1e4
  # log: the output is log alpha(s), kept in [log minimum, log maximum] | softplus: the
  # paper's App. F head, alpha(s) = softplus(output) > 0 with no other bound.
  output: str = "log"

  def setup(self):
    # Plain nn.Dense in float32, whatever the matmul_dtype: the dual step takes forward-mode
    # derivatives of log alpha(s) (jax.linearize), which layer_matmul (a custom_vjp) has not.
    self.trunk = [nn.Dense(width) for width in self.hidden_dims]
    self.head = nn.Dense(1, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)

  def raw(self, observations: jax.Array) -> jax.Array:
    """The head's output plus the start's offset: log alpha(s), or softplus^-1 alpha(s)."""
    x = observations
    for layer in self.trunk:
      x = nn.relu(layer(x))
    offset = math.log(self.initial) if self.output == "log" else _inverse_softplus(self.initial)
    return self.head(x)[..., 0] + offset

  def log_alpha(self, observations: jax.Array) -> jax.Array:
    if self.output == "log":
      return self.raw(observations)
    return jnp.log(nn.softplus(self.raw(observations)))

  def __call__(self, observations: jax.Array) -> jax.Array:
    if self.output == "softplus":
      return nn.softplus(self.raw(observations))
    log_alpha = jnp.clip(self.log_alpha(observations), math.log(self.minimum), math.log(self.maximum))
    return jnp.exp(log_alpha)

  def tangent_kernel(self, observations: jax.Array) -> jax.Array:
    """K = J J^T [N, N] for observations [N, obs], J = d log alpha(s) / d parameters.

    K[i, j] is how far a unit gradient step on log alpha(s_j) moves log alpha(s_i): the
    dual step solves with it to move each state by its own target (`learner.alpha_dual`).
    A dense layer's weight gradient at one state is the outer product of its input x and
    the output's gradient g at its pre-activation, so the layer adds (x x^T + 1) * (g g^T)
    (the 1 for its bias): Gram matrices of the activations, never J itself.
    """
    inputs, pre_activations = [], []
    x = observations
    for layer in self.trunk:
      inputs.append(x)
      pre_activations.append(layer(x))
      x = nn.relu(pre_activations[-1])
    layers = list(self.trunk) + [self.head]
    inputs.append(x)
    output_gradient = jnp.ones(observations.shape[:-1] + (1,), observations.dtype)  # d out / d out
    kernel = jnp.zeros(observations.shape[:-1] * 2, observations.dtype)
    for index in reversed(range(len(layers))):
      if index < len(layers) - 1:  # back through the next layer and this layer's ReLU
        next_weight = layers[index + 1].variables["params"]["kernel"]
        output_gradient = (output_gradient @ next_weight.T) * (pre_activations[index] > 0)
      layer_input = inputs[index]
      kernel += (layer_input @ layer_input.T + 1.0) * (output_gradient @ output_gradient.T)
    return kernel


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _clip_keeping_inward_gradient(raw: jax.Array, low: float, high: float) -> jax.Array:
  """clip(raw, low, high) whose gradient passes straight through, except where a descent
  step would push raw further outside the bounds: there it is zero, so raw stays near the
  bound instead of drifting past it, and a reversed push moves the value again at once."""
  return jnp.clip(raw, low, high)


def _clip_forward(raw, low, high):
  return jnp.clip(raw, low, high), raw


def _clip_backward(low, high, raw, cotangent):
  # Descent moves raw by -cotangent: outward is up at the top bound, down at the bottom one.
  outward = ((raw >= high) & (cotangent < 0)) | ((raw <= low) & (cotangent > 0))
  return (jnp.where(outward, jnp.zeros_like(cotangent), cotangent),)


_clip_keeping_inward_gradient.defvjp(_clip_forward, _clip_backward)


class LagrangeMultiplier(nn.Module):
  """One positive scalar softplus(raw), raw initialised so the value starts at `initial`.

  Used for the global alpha, the entropy multiplier beta and the released
  code's gradient-penalty weight. `minimum` floors the value (released code:
  the GP weight never drops below its initial 0.1) and `maximum` caps it
  (released code: softplus^-1(1e4) on every multiplier). Both clip raw with a
  straight-through gradient that is cut only where it would push raw further
  out: a plain straight-through clip lets raw drift past the bound for as long
  as the dual pushes, and the value then stays pinned there for as long again
  after the push reverses; here it leaves the bound within a few steps.
  """

  initial: float = 1.0
  minimum: float | None = None
  maximum: float | None = None

  @nn.compact
  def __call__(self) -> jax.Array:
    raw = self.param("raw", nn.initializers.constant(_inverse_softplus(self.initial)), ())
    if self.minimum is not None or self.maximum is not None:
      low = -math.inf if self.minimum is None else _inverse_softplus(self.minimum)
      high = math.inf if self.maximum is None else _inverse_softplus(self.maximum)
      raw = _clip_keeping_inward_gradient(raw, low, high)
    return jax.nn.softplus(raw)


class GlobalAlpha(nn.Module):
  """One alpha for every state (released code: initial 10, capped at 1e4); returns alpha
  broadcast to [...]."""

  initial: float = 10.0
  maximum: float | None = 1e4

  @nn.compact
  def __call__(self, observations: jax.Array) -> jax.Array:
    alpha = LagrangeMultiplier(self.initial, maximum=self.maximum, name="multiplier")()
    return jnp.broadcast_to(alpha, observations.shape[:-1])
