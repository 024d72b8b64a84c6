"""Network shapes, parameterisations and ensemble layout, checked against plain numpy forwards."""

import math
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bracplus_jax import losses, networks
from bracplus_jax.data.transitions import Transitions

OBS_DIM, ACT_DIM, LATENT_DIM = 5, 2, 3


def numpy_mlp(layers, x):
  """ReLU MLP forward from Flax Dense params {'Dense_0': {...}, ...}."""
  names = sorted(layers, key=lambda name: int(name.split("_")[1]))
  for index, name in enumerate(names):
    x = x @ np.asarray(layers[name]["kernel"]) + np.asarray(layers[name]["bias"])
    if index < len(names) - 1:
      x = np.maximum(x, 0.0)
  return x


def random_params(module, *inputs, seed=0):
  """Parameters of the module's shapes drawn in numpy: tracing the shapes skips compiling the initialisers."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
  return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, 0.5, leaf.shape), leaf.dtype), shapes)


def observations(batch=4, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, OBS_DIM)).astype(np.float32)


@pytest.fixture(scope="module", params=["paper", "released"])
def policy_setup(request):
  policy = networks.TanhGaussianPolicy(ACT_DIM, hidden_dims=(16, 16), scale=request.param)
  return policy, random_params(policy, observations())


def test_policy_matches_a_numpy_forward(policy_setup):
  policy, params = policy_setup
  obs = observations()
  mean, std = policy.apply(params, obs)
  raw = numpy_mlp(params["params"]["trunk"], obs)
  expected_mean, raw_scale = raw[:, :ACT_DIM], raw[:, ACT_DIM:]
  if policy.scale == "paper":
    expected_std = np.exp(np.clip(raw_scale, -20.0, 2.0))
  else:
    expected_std = np.log1p(np.exp(np.clip(raw_scale, -10.0, 5.0)))
  np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std, expected_std, rtol=1e-5)


def test_policy_scale_is_bounded(policy_setup):
  policy, params = policy_setup
  largest_std = math.exp(2.0) if policy.scale == "paper" else math.log1p(math.exp(5.0))
  params = jax.tree.map(lambda x: x * 1e4, params)
  _, std = policy.apply(params, observations())
  assert np.all(std > 0.0)
  assert np.all(std <= largest_std * (1 + 1e-6))
  assert np.any(np.isclose(std, largest_std, rtol=1e-5))


def test_policy_rejects_an_unknown_scale():
  with pytest.raises(ValueError, match="scale"):
    policy = networks.TanhGaussianPolicy(ACT_DIM, hidden_dims=(8,), scale="other")
    jax.eval_shape(policy.init, jax.random.PRNGKey(0), observations())


@pytest.fixture(scope="module")
def critic_setup():
  critic = networks.TwinCritic(hidden_dims=(16, 16))
  obs = observations(6)
  actions = np.random.default_rng(2).uniform(-1, 1, size=(6, ACT_DIM)).astype(np.float32)
  params = jax.jit(critic.init)(jax.random.PRNGKey(0), obs, actions)
  return critic, params, obs, actions


def test_twin_critic_heads_are_two_independent_mlps(critic_setup):
  critic, params, obs, actions = critic_setup
  q_values = critic.apply(params, obs, actions)
  assert q_values.shape == (2, 6)

  heads = params["params"]["heads"]
  single = networks.QNetwork(hidden_dims=(16, 16))
  inputs = np.concatenate([obs, actions], axis=-1)
  for head in range(2):
    head_params = jax.tree.map(lambda x: x[head], heads)
    np.testing.assert_allclose(single.apply({"params": head_params}, obs, actions), q_values[head], rtol=1e-5)
    np.testing.assert_allclose(numpy_mlp(head_params["mlp"], inputs)[:, 0], q_values[head], rtol=1e-5, atol=1e-6)

  # Different initial values, and head 0's output has no gradient into head 1's parameters.
  assert not np.allclose(heads["mlp"]["Dense_0"]["kernel"][0], heads["mlp"]["Dense_0"]["kernel"][1])
  grads = jax.jit(jax.grad(lambda p: critic.apply(p, obs, actions)[0].sum()))(params)
  for leaf in jax.tree.leaves(grads):
    assert np.all(leaf[1] == 0.0)
    assert np.any(leaf[0] != 0.0)


def test_twin_critic_accepts_extra_leading_axes(critic_setup):
  critic, params, obs, actions = critic_setup
  stacked = critic.apply(params, np.broadcast_to(obs, (4, 6, OBS_DIM)), np.broadcast_to(actions, (4, 6, ACT_DIM)))
  assert stacked.shape == (2, 4, 6)
  np.testing.assert_allclose(stacked[:, 1], critic.apply(params, obs, actions), rtol=1e-6)


@pytest.fixture(scope="module")
def ensemble_setup():
  return make_ensemble()


def make_ensemble(ensemble_size=3, batch=5):
  ensemble = networks.BehaviorVAEEnsemble(ACT_DIM, LATENT_DIM, hidden_dims=(16, 16), ensemble_size=ensemble_size)
  rng = np.random.default_rng(3)
  obs = rng.normal(size=(batch, OBS_DIM)).astype(np.float32)
  pre_tanh = rng.normal(size=(batch, ACT_DIM)).astype(np.float32)
  noise = rng.normal(size=(ensemble_size, batch, LATENT_DIM)).astype(np.float32)
  stacked_obs, stacked_pre_tanh = networks.broadcast_to_members((obs, pre_tanh), ensemble_size)
  params = random_params(ensemble, stacked_obs, stacked_pre_tanh, noise)
  return ensemble, params, (stacked_obs, stacked_pre_tanh, noise)


def test_vae_member_matches_a_numpy_encoder_and_decoder(ensemble_setup):
  ensemble, params, (obs, pre_tanh, noise) = ensemble_setup
  posterior_mean, posterior_std, decoder_mean, decoder_std = ensemble.apply(params, obs, pre_tanh, noise)
  member = 1
  layers = jax.tree.map(lambda x: x[member], params["params"]["members"])

  def softplus_clipped(raw):
    return np.log1p(np.exp(np.clip(raw, -10.0, 5.0)))

  encoded = numpy_mlp(layers["encoder"], np.concatenate([pre_tanh[member], obs[member]], -1))
  np.testing.assert_allclose(posterior_mean[member], encoded[:, :LATENT_DIM], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(posterior_std[member], softplus_clipped(encoded[:, LATENT_DIM:]), rtol=1e-5)
  latents = encoded[:, :LATENT_DIM] + softplus_clipped(encoded[:, LATENT_DIM:]) * noise[member]
  decoded = numpy_mlp(layers["decoder"], np.concatenate([latents, obs[member]], -1))
  np.testing.assert_allclose(decoder_mean[member], decoded[:, :ACT_DIM], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(decoder_std[member], softplus_clipped(decoded[:, ACT_DIM:]), rtol=1e-4)


def test_single_member_evaluation_matches_the_all_members_evaluation(ensemble_setup):
  ensemble, params, (obs, pre_tanh, noise) = ensemble_setup
  everything = ensemble.apply(params, obs, pre_tanh, noise)
  assert not np.allclose(everything[0][0], everything[0][1])
  for member in range(3):
    alone = ensemble.member().apply(networks.member_variables(params, member), obs[0], pre_tanh[0], noise[member])
    sliced = ensemble.apply(networks.slice_members(params, member), obs[:1], pre_tanh[:1], noise[member : member + 1])
    for expected, single, one_slice in zip(everything, alone, sliced):
      np.testing.assert_allclose(single, expected[member], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(one_slice[0], expected[member], rtol=1e-5, atol=1e-6)
  # The slice reads the stacked parameters at a traced index, so a random member works under jit.
  pick = jax.jit(lambda m: ensemble.apply(networks.slice_members(params, m), obs[:1], pre_tanh[:1], noise[:1]))
  np.testing.assert_allclose(pick(2)[0][0], everything[0][2], rtol=1e-5, atol=1e-6)


def test_encode_and_decode_methods_agree_with_the_full_pass(ensemble_setup):
  ensemble, params, (obs, pre_tanh, noise) = ensemble_setup
  posterior_mean, posterior_std, decoder_mean, decoder_std = ensemble.apply(params, obs, pre_tanh, noise)
  mean, std = ensemble.apply(params, obs, pre_tanh, method="encode")
  np.testing.assert_allclose(mean, posterior_mean, rtol=1e-6)
  np.testing.assert_allclose(std, posterior_std, rtol=1e-6)
  mean, std = ensemble.apply(params, obs, posterior_mean + posterior_std * noise, method="decode")
  np.testing.assert_allclose(mean, decoder_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std, decoder_std, rtol=1e-5)


@pytest.mark.parametrize("num_rows, ensemble_size", [(9, 3), (10, 3), (2, 3), (7, 1)])
def test_member_assignment_deals_every_row_to_exactly_one_member(num_rows, ensemble_size):
  assignment = networks.MemberAssignment.random(jax.random.PRNGKey(4), num_rows, ensemble_size)
  rows_per_member = -(-num_rows // ensemble_size)
  rows = np.arange(num_rows, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
  dealt = assignment.to_members(rows)
  assert dealt.shape == (ensemble_size, rows_per_member, 2)
  np.testing.assert_array_equal(assignment.from_members(dealt), rows)
  member_of_row = np.asarray(assignment.member_of_row)
  for row in range(num_rows):
    assert row in np.asarray(dealt[member_of_row[row], :, 0])
  # A member's output for a row comes back to that row.
  per_member = dealt[..., 0] * 100 + np.arange(ensemble_size)[:, None]
  np.testing.assert_array_equal(assignment.from_members(per_member), np.arange(num_rows) * 100 + member_of_row)


def test_member_assignment_is_uniform_over_members_for_each_row():
  keys = jax.random.split(jax.random.PRNGKey(5), 3000)
  members = jax.vmap(lambda key: networks.MemberAssignment.random(key, 8, 3).member_of_row)(keys)
  frequencies = np.stack([(np.asarray(members) == m).mean(0) for m in range(3)])
  np.testing.assert_allclose(frequencies, 1 / 3, atol=0.04)


def test_state_alpha_is_positive_and_global_alpha_starts_at_its_initial_value():
  alpha = networks.StateAlpha(hidden_dims=(8, 8))
  params = random_params(alpha, observations())
  values = alpha.apply(jax.tree.map(lambda x: x * 50.0, params), observations(8))
  assert values.shape == (8,)
  assert np.all(values >= 0.0)
  # The offset makes alpha(s) start near `initial`: softplus(mlp(s) + softplus^-1(initial)).
  started = networks.StateAlpha(hidden_dims=(8, 8), initial=10.0)
  zero_params = jax.tree.map(jnp.zeros_like, random_params(started, observations()))
  np.testing.assert_allclose(started.apply(zero_params, observations(4)), [10.0] * 4, rtol=1e-5)
  global_alpha = networks.GlobalAlpha()
  global_params = jax.jit(global_alpha.init)(jax.random.PRNGKey(0), observations())
  np.testing.assert_allclose(global_alpha.apply(global_params, observations(3)), [10.0] * 3, rtol=1e-5)


def test_lagrange_multiplier_floor_keeps_the_gradient_that_moves_it_back_up():
  multiplier = networks.LagrangeMultiplier(initial=0.1, minimum=0.1)
  params = jax.jit(multiplier.init)(jax.random.PRNGKey(0))
  assert float(multiplier.apply(params)) == pytest.approx(0.1, rel=1e-5)
  lowered = jax.tree.map(lambda x: x - 5.0, params)
  assert float(multiplier.apply(lowered)) == pytest.approx(0.1, rel=1e-5)

  def raw_gradient(objective, p):
    return float(jax.grad(objective)(p)["params"]["raw"])

  # Descending -value raises raw: it passes the floor (straight through, softplus'(floor)).
  floor_slope = 1.0 / (1.0 + np.exp(-float(params["params"]["raw"])))
  assert raw_gradient(lambda p: -multiplier.apply(p), lowered) == pytest.approx(-floor_slope, rel=1e-5)
  # Descending value would push raw further below the floor: cut, so raw cannot drift away.
  assert raw_gradient(lambda p: multiplier.apply(p), lowered) == 0.0
  # Inside the bounds both directions pass.
  raised = jax.tree.map(lambda x: x + 1.0, params)
  assert raw_gradient(lambda p: multiplier.apply(p), raised) == pytest.approx(
      1.0 / (1.0 + np.exp(-float(raised["params"]["raw"]))), rel=1e-5)


def dual_push(multiplier, optimizer, violations):
  """The multiplier after each dual step on -value * violation (the Lagrange multiplier loss)."""
  params = multiplier.init(jax.random.PRNGKey(0))

  def step(carry, violation):
    params, optimizer_state = carry
    gradients = jax.grad(lambda p: -multiplier.apply(p) * violation)(params)
    updates, optimizer_state = optimizer.update(gradients, optimizer_state, params)
    params = optax.apply_updates(params, updates)
    return (params, optimizer_state), multiplier.apply(params)

  _, values = jax.jit(lambda v: jax.lax.scan(step, (params, optimizer.init(params)), v))(violations)
  return np.asarray(values)


@pytest.mark.parametrize("bound", ["maximum", "minimum"])
@pytest.mark.parametrize("optimizer, release_steps", [(optax.sgd(0.05), 2), (optax.adam(0.01), 10)],
                         ids=["sgd", "adam"])
def test_lagrange_multiplier_bound_holds_under_a_long_push_and_releases_when_it_reverses(
    bound, optimizer, release_steps):
  limit = 2.0 if bound == "maximum" else 0.5
  multiplier = networks.LagrangeMultiplier(initial=1.0, **{bound: limit})
  push, back = 2000, 50
  outward = 1.0 if bound == "maximum" else -1.0  # a positive violation raises the multiplier
  violations = outward * np.concatenate([np.ones(push), -np.ones(back)]).astype(np.float32)
  values = dual_push(multiplier, optimizer, jnp.asarray(violations))
  pushed, released = values[:push], values[push:]
  if bound == "maximum":
    assert pushed.max() <= limit * (1 + 1e-6)
  else:
    assert pushed.min() >= limit * (1 - 1e-6)
  assert pushed[-1] == pytest.approx(limit, rel=1e-5)
  # A plain straight-through clip lets raw run on ~push steps past the bound, and the value
  # stays pinned as long again; here it leaves the bound within a few steps and keeps going.
  moved = outward * (limit - released)
  assert moved[release_steps - 1] > 1e-4
  assert np.all(np.diff(moved[release_steps:]) > 0)


# ---------------------------------------------------------------------------
# bfloat16 matmuls
# ---------------------------------------------------------------------------


def to_bfloat16(x):
  """x rounded to the nearest bfloat16, back in float64: what the matmul's operands become."""
  return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


@pytest.mark.parametrize("outputs", [12, 5])
def test_bfloat16_matmul_and_its_input_gradient_use_bfloat16_operands_summed_in_float32(outputs):
  """12 outputs: the input gradient is a bfloat16 product too; 5: its contraction has at most
  NARROW_CONTRACTION_MAX inputs, runs as elementwise multiply-adds and stays float32."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 7, 33)).astype(np.float32)
  w = rng.normal(size=(33, outputs)).astype(np.float32)
  cotangent = rng.normal(size=(2, 7, outputs)).astype(np.float32)
  out, pullback = jax.vjp(networks.bfloat16_matmul, x, w)
  grad_x, grad_w = pullback(cotangent)
  assert out.dtype == grad_x.dtype == grad_w.dtype == jnp.float32

  # Products of the rounded operands, summed exactly (float64): float32 accumulation is
  # within float32 rounding of that, far inside bfloat16's 2^-9.
  np.testing.assert_allclose(out, to_bfloat16(x) @ to_bfloat16(w), rtol=1e-5, atol=1e-5)
  exact_grad_x = cotangent.astype(np.float64) @ w.astype(np.float64).T
  if outputs > networks.NARROW_CONTRACTION_MAX:
    np.testing.assert_allclose(grad_x, to_bfloat16(cotangent) @ to_bfloat16(w).T, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(np.asarray(grad_x, np.float64) - exact_grad_x)) > 1e-3
  else:
    np.testing.assert_allclose(grad_x, exact_grad_x, rtol=1e-5, atol=1e-5)
  # ... and they are not float32's products: the rounding is real.
  assert np.max(np.abs(np.asarray(out, np.float64) - x.astype(np.float64) @ w)) > 1e-3
  # The weights' gradient is float32's.
  exact_grad_w = x.astype(np.float64).reshape(-1, 33).T @ cotangent.astype(np.float64).reshape(-1, outputs)
  np.testing.assert_allclose(grad_w, exact_grad_w, rtol=1e-5, atol=1e-5)


def test_matrix_vector_products_stay_float32():
  """XLA's CPU bfloat16 kernels refuse them (a Q head's last layer, a single row): float32's."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(9, 33)).astype(np.float32)
  for inputs, weights in ((x, rng.normal(size=(33, 1))), (x[:1], rng.normal(size=(33, 4)))):
    weights = weights.astype(np.float32)
    np.testing.assert_allclose(networks.bfloat16_matmul(inputs, weights),
                               inputs.astype(np.float64) @ weights, rtol=1e-5, atol=1e-5)


def test_bfloat16_networks_keep_float32_parameters_and_track_float32_to_bfloat16_precision():
  rng = np.random.default_rng(5)
  obs = rng.normal(size=(64, OBS_DIM)).astype(np.float32)
  actions = rng.uniform(-1, 1, size=(64, ACT_DIM)).astype(np.float32)
  exact = networks.TwinCritic(hidden_dims=(32, 32))
  rounded = networks.TwinCritic(hidden_dims=(32, 32), matmul_dtype="bfloat16")
  params = exact.init(jax.random.PRNGKey(0), obs, actions)
  assert jax.tree.structure(rounded.init(jax.random.PRNGKey(0), obs, actions)) == jax.tree.structure(params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))

  def penalty(critic):  # the gradient penalty's double backprop: d/dparams of ||dQ/da||^2
    return jax.grad(lambda p: jnp.sum(losses.action_gradients(
        partial(critic.apply, p), obs, actions, per_head_actions=True) ** 2))(params)

  q_exact, q_rounded = exact.apply(params, obs, actions), rounded.apply(params, obs, actions)
  scale = np.max(np.abs(q_exact))
  assert 0 < np.max(np.abs(q_rounded - q_exact)) < 2e-2 * scale
  # Every layer's penalty gradient to within a few bfloat16 roundings (the output bias's is 0).
  for leaf_exact, leaf_rounded in zip(jax.tree.leaves(penalty(exact)), jax.tree.leaves(penalty(rounded))):
    assert np.linalg.norm(leaf_rounded - leaf_exact) <= 5e-2 * np.linalg.norm(leaf_exact) + 1e-7


def dot_flops_by_operand_dtype(stablehlo: str) -> dict[str, float]:
  """FLOPs of the program's dot_generals, summed by their operands' element type."""
  flops: dict[str, float] = {}
  for line in stablehlo.splitlines():
    if "stablehlo.dot_general" not in line:
      continue
    contracting = re.search(r"contracting_dims = \[([\d, ]*)\] x", line).group(1)
    lhs, _, out = re.search(r":\s*\(tensor<([^>]*)>, tensor<([^>]*)>\)\s*->\s*tensor<([^>]*)>", line).groups()
    lhs_dims = [int(d) for d in lhs.split("x")[:-1]]
    out_dims = [int(d) for d in out.split("x")[:-1]]
    inner = math.prod(lhs_dims[int(i)] for i in contracting.split(","))
    dtype = lhs.split("x")[-1]
    flops[dtype] = flops.get(dtype, 0.0) + 2.0 * math.prod(out_dims) * inner
  return flops


@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
def test_bfloat16_steps_take_nearly_all_their_matmul_flops_in_bfloat16(matmul_dtype):
  """Forward products, the backward products to the inputs and the penalty's second backward
  pass run in bfloat16; weight gradients (a transposed product) and alpha(s) stay float32."""
  from bracplus_jax.configs import base
  from bracplus_jax import learner
  config = base.get_config()
  base.use_released_code_choices(config)
  for name in ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims"):
    config.algo[name] = (32, 32)
  config.algo.matmul_dtype = matmul_dtype
  algorithm = learner.BRACPlus(config.algo, OBS_DIM, ACT_DIM, dataset_size=16)
  state = algorithm.start_rl(algorithm.init(jax.random.key(0)))
  rng = np.random.default_rng(6)
  batch = Transitions(
      observations=jnp.asarray(rng.normal(size=(16, OBS_DIM)), jnp.float32),
      actions=jnp.asarray(rng.uniform(-0.9, 0.9, size=(16, ACT_DIM)), jnp.float32),
      rewards=jnp.ones(16), next_observations=jnp.asarray(rng.normal(size=(16, OBS_DIM)), jnp.float32),
      dones=jnp.zeros(16), index=jnp.arange(16))
  shares = {}
  for step, least in ((algorithm.update, 0.8), (algorithm.behavior_step, 0.5), (algorithm.policy_init_step, 0.8)):
    flops = dot_flops_by_operand_dtype(jax.jit(step).lower(state, batch, jax.random.key(1)).as_text())
    shares[step.__name__] = flops.get("bf16", 0.0) / sum(flops.values())
    assert shares[step.__name__] >= least if matmul_dtype == "bfloat16" else shares[step.__name__] == 0.0, shares


@pytest.mark.parametrize("inputs", ["one array", "parts, one shared by the rows"])
def test_layer_matmul_gradients_equal_jax_s_own_dot_rule_to_float32_rounding(inputs):
  """First and second order (the penalty's double backprop), against plain nn.Dense on the
  concatenated input: one array of OBS_DIM = 5 features (a narrow product), or ConcatDense's
  parts, an [3, 1, obs] part broadcast over the 9 rows of an [3, 9, act] part."""
  import flax.linen as nn

  class PlainMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for width in (32, 32):
        x = nn.relu(nn.Dense(width)(x))
      return nn.Dense(1)(x)[..., 0]

  ours_mlp, plain = networks.MLP((32, 32), 1), PlainMLP()
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.normal(size=(3, 9, OBS_DIM)), jnp.float32)  # the input differentiated twice
  if inputs == "one array":
    ours_input, plain_input = (lambda v: v), (lambda v: v)
  else:
    shared = jnp.asarray(rng.normal(size=(3, 1, 11)), jnp.float32)
    ours_input = lambda v: (v, shared)  # noqa: E731
    plain_input = lambda v: jnp.concatenate([v, jnp.broadcast_to(shared, (3, 9, 11))], axis=-1)  # noqa: E731
  params = plain.init(jax.random.PRNGKey(0), plain_input(x))
  ours_params = ours_mlp.init(jax.random.PRNGKey(0), ours_input(x))
  assert jax.tree.structure(ours_params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(ours_params), jax.tree.leaves(params)):  # nn.Dense's initialisation
    np.testing.assert_array_equal(a, b)
  cases = ((ours_mlp, ours_input), (plain, plain_input))
  out_ours, out_plain = (module.apply(params, to_input(x)) for module, to_input in cases)
  np.testing.assert_allclose(out_ours[..., 0], out_plain, rtol=2e-5, atol=1e-6)

  def first(module, to_input):
    return jax.grad(lambda p: jnp.sum(jnp.sin(module.apply(p, to_input(x)))))(params)

  def second(module, to_input):  # d/dparams of ||d out / d x||^2
    return jax.grad(lambda p: jnp.sum(jax.grad(lambda v: jnp.sum(module.apply(p, to_input(v))))(x) ** 2))(params)

  for ours, theirs in ((first(*cases[0]), first(*cases[1])), (second(*cases[0]), second(*cases[1]))):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_concat_dense_multiplies_a_shared_part_once_per_state():
  """The decoder's observation part is multiplied at its own [B, N, 1, 1, obs] shape, not
  at the [B, N, n, L, obs] of the rows it broadcasts over: the lowered program's dots say so."""
  obs_dim = 11  # wider than a narrow product (networks.NARROW_CONTRACTION_MAX): a dot
  ensemble = networks.BehaviorVAEEnsemble(ACT_DIM, LATENT_DIM, (16, 16), ensemble_size=3)
  rng = np.random.default_rng(9)
  obs = jnp.asarray(rng.normal(size=(3, 4, 1, 1, obs_dim)), jnp.float32)
  latents = jnp.asarray(rng.normal(size=(3, 4, 5, 6, LATENT_DIM)), jnp.float32)
  params = random_params(ensemble, obs[:, :, 0, 0], jnp.zeros((3, 4, ACT_DIM)), jnp.zeros((3, 4, LATENT_DIM)))
  mean, std = ensemble.apply(params, obs, latents, method="decode")
  assert mean.shape == std.shape == (3, 4, 5, 6, ACT_DIM)
  broadcast_obs = jnp.broadcast_to(obs, (3, 4, 5, 6, obs_dim))
  for shared, full in zip((mean, std), ensemble.apply(params, broadcast_obs, latents, method="decode")):
    np.testing.assert_allclose(shared, full, rtol=1e-5, atol=1e-6)
  text = jax.jit(partial(ensemble.apply, method="decode")).lower(params, obs, latents).as_text()
  observation_products = re.findall(r"stablehlo.dot_general.*tensor<3x4x1x1x%dxf32>" % obs_dim, text)
  assert observation_products, "the observations' product should be taken per state"
  assert not re.search(r"tensor<3x4x5x6x%dxf32>" % obs_dim, text), "no [rows, obs] copy is made"


def test_the_min_over_q_heads_of_narrow_hidden_layers_has_finite_action_gradients():
  """Hidden layers of width <= NARROW_CONTRACTION_MAX keep the matmul: an elementwise Q
  head, recomputed in each fusion that reads it, made the min's gradient 0/0 in some rows
  (seen under this suite's XLA_FLAGS, backend optimisation level 0)."""
  width = networks.NARROW_CONTRACTION_MAX
  critic = networks.TwinCritic(hidden_dims=(width, width))
  rng = np.random.default_rng(0)
  obs = jnp.asarray(rng.normal(size=(16, 2)), jnp.float32)
  actions = jnp.asarray(rng.uniform(-1, 1, size=(5, 16, 1)), jnp.float32)
  params = critic.init(jax.random.PRNGKey(0), obs, actions)
  gradients = jax.jit(jax.grad(lambda a: jnp.sum(jnp.min(critic.apply(params, obs, a), axis=0))))(actions)
  broadcast_obs = jnp.broadcast_to(obs, (5, 16, 2))
  reference = jax.grad(lambda a: jnp.sum(jnp.min(critic.apply(params, broadcast_obs, a), axis=0)))(actions)
  assert np.all(np.isfinite(gradients))
  np.testing.assert_allclose(gradients, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("columns", [1, 6, 32])
def test_row_contraction_is_left_transposed_times_right(columns):
  """A weight gradient x^T g; with at most NARROW_GRADIENT_COLUMNS_MAX columns it is taken as
  (g^T x)^T."""
  rng = np.random.default_rng(12)
  left, right = rng.normal(size=(300, 17)), rng.normal(size=(300, columns))
  out = networks._row_contraction(jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32))
  assert out.shape == (17, columns)
  np.testing.assert_allclose(out, left.T @ right, rtol=1e-5, atol=1e-4)


def test_a_behaviour_step_writes_out_no_transposed_hidden_weight():
  """The decoder's hidden layer sees a unit axis (one latent draw per row); in float32 its
  backward pass to the input still contracts the weight's minor axis in place: no transpose
  of a [seeds, members, 64, 64] weight anywhere in a compiled, seed-vmapped scan of Adam steps."""
  hidden, batch = 64, 100
  ensemble = networks.BehaviorVAEEnsemble(3, 6, (hidden, hidden), ensemble_size=3)
  rng = np.random.default_rng(13)
  data = Transitions(*(jnp.asarray(rng.uniform(-0.9, 0.9, size=shape), jnp.float32)
                       for shape in ((batch, 11), (batch, 3), (batch,), (batch, 11), (batch,))))
  params = random_params(ensemble, *networks.broadcast_to_members(
      (data.observations, data.actions, jnp.zeros((batch, 6))), 3))
  optimizer = optax.adam(1e-3)

  def step(carry, key):
    params, opt_state = carry
    grads = jax.grad(lambda p: losses.behavior_loss(p, ensemble, key, data)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  keys = jax.random.split(jax.random.key(0), 2)
  run = jax.vmap(lambda params, opt_state: jax.lax.scan(step, (params, opt_state), keys)[0])
  seeds = lambda tree: jax.tree.map(lambda leaf: leaf[None], tree)
  text = jax.jit(run).lower(seeds(params), seeds(optimizer.init(params))).compile().as_text()
  weight = rf"f32\[1,3,{hidden},{hidden}\]"
  transposes = [line for line in text.splitlines() if re.search(rf"= {weight}\S* transpose\(", line)]
  assert not transposes, transposes


@pytest.mark.parametrize("shape", [(2, 1, 7, 1), (1, 1)])
def test_products_over_unit_axes_and_their_input_gradients_are_numpy_s(shape):
  """float32 products whose rows have unit axes (the transposed one drops them), and the
  backward pass to such an input, against float64 numpy."""
  rng = np.random.default_rng(14)
  x = rng.normal(size=shape + (12,)).astype(np.float32)
  w = rng.normal(size=(12, 9)).astype(np.float32)
  transposed = networks.layer_matmul(jnp.asarray(x), jnp.asarray(w.T), "float32", True)
  np.testing.assert_allclose(transposed, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
  grad_x = jax.grad(lambda v: jnp.sum(jnp.sin(networks.layer_matmul(v, jnp.asarray(w)))))(jnp.asarray(x))
  exact = np.cos(x.astype(np.float64) @ w) @ w.T.astype(np.float64)
  np.testing.assert_allclose(grad_x, exact, rtol=1e-4, atol=1e-5)
