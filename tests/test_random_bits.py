"""The CPU's unrolled Threefry lowering draws exactly the bits of JAX's rolled one."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bracplus_jax import random_bits
from bracplus_jax.random_bits import unroll_threefry_on_cpu

unroll_threefry_on_cpu()  # as training does (learner.py): every draw below is the unrolled lowering's

# Draws of the kinds an update makes: normals and uniforms of odd shapes, split and folded
# keys, batch indices; vmapped over seeds as train.py runs them.
DRAWS = """
import jax, jax.numpy as jnp
def draws(seed):
  key = jax.random.key(seed)
  a, b, c = jax.random.split(key, 3)
  return (jax.random.normal(a, (3, 100, 5, 6)),
          jax.random.uniform(jax.random.fold_in(b, 7), (257,)),
          jax.random.randint(c, (33,), 0, 100_000),
          jax.random.bits(key, (5, 3)))
def all_draws():
  out = jax.jit(jax.vmap(draws))(jnp.arange(4))
  return [x.tolist() for x in out]
"""


def test_the_unrolled_lowering_is_registered_and_leaves_no_loop_in_the_program():
  assert unroll_threefry_on_cpu()
  text = jax.jit(lambda key: jax.random.normal(key, (64,))).lower(jax.random.key(0)).compile().as_text()
  assert "while" not in text


def test_unrolled_draws_equal_the_rolled_lowering_s_bit_for_bit():
  namespace = {}
  exec(DRAWS, namespace)
  ours = namespace["all_draws"]()
  plain_jax = subprocess.run(
      [sys.executable, "-c", DRAWS + "import json; print(json.dumps(all_draws()))"],
      capture_output=True, text=True, check=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  theirs = json.loads(plain_jax.stdout.strip().splitlines()[-1])
  normals, *bits = zip(ours, theirs)
  for mine, rolled in bits:  # uniforms, integers, raw bits: the hash's output, exactly
    np.testing.assert_array_equal(np.asarray(mine), np.asarray(rolled))
  # Normals are erf_inv of those bits, which XLA vectorises differently in the two programs:
  # a last-bit difference in a few per cent of them.
  np.testing.assert_allclose(np.asarray(normals[0]), np.asarray(normals[1]), rtol=5e-7, atol=5e-7)


def test_flat_normals_are_jax_s_normals_of_that_shape():
  key = jax.random.key(11)
  for shape in [(3, 100, 5, 5, 6), (2, 7), (5,), ()]:
    np.testing.assert_array_equal(random_bits.normal(key, shape), jax.random.normal(key, shape))
  under_vmap = jax.vmap(lambda k: random_bits.normal(k, (4, 3)))(jax.random.split(key, 2))
  np.testing.assert_array_equal(under_vmap, jax.vmap(lambda k: jax.random.normal(k, (4, 3)))(jax.random.split(key, 2)))


def test_written_once_is_the_identity_of_finite_numbers():
  x = jnp.asarray([1.5, -2.0, 0.0, 3e-38, -1e30, 7.0], jnp.float32)
  np.testing.assert_array_equal(random_bits.written_once(x), x)
  np.testing.assert_array_equal(jax.jit(random_bits.written_once)(x.reshape(2, 3)), x.reshape(2, 3))


def test_a_draw_read_by_the_forward_and_the_backward_pass_is_computed_in_one_fusion():
  """The latents' pattern, z = mean + std * noise differentiated: without `written_once`,
  XLA's CPU fusion computes the normals (their erf_inv) again in each of four fusions."""

  def loss(key, mean, std):
    latents = mean + std * random_bits.normal(key, mean.shape)
    return jnp.sum(jnp.sin(latents) * latents)

  ones = jnp.ones((3, 100, 5, 6))
  compiled = jax.jit(jax.grad(loss, argnums=(1, 2))).lower(jax.random.key(0), ones, ones).compile()
  computations = re.split(r"\n(?=\S)", compiled.as_text())
  drawing = [c.split(" ", 1)[0] for c in computations if "erf_inv" in c and not c.startswith("ENTRY")]
  assert len(drawing) == 1, drawing
