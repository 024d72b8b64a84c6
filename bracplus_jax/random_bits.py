"""Random draws on the CPU: the same numbers as jax.random's, several times faster.

JAX lowers its Threefry-2x32 hash on the CPU as a rolled loop of five
four-round blocks (`use_rolled_loops=True`), to keep compile times short; on
every other platform it emits the twenty rounds straight. The rolled loop runs
as an XLA while loop whose every iteration re-reads and re-writes the counters,
and an update draws tens of thousands of normals (policy samples, latents, and
batch indices): 45,000 uniforms took 0.68 ms rolled and 0.15 ms straight on a
2-core CPU. The round
function is the same either way, so the bits are identical
(tests/test_random_bits.py checks them against a process that kept the loop;
normals, erf_inv of those bits, can differ in their last bit where XLA
vectorises erf_inv differently).

`unroll_threefry_on_cpu()` registers JAX's own straight lowering for the CPU.
It runs when `bracplus_jax.learner` is imported; a JAX without the private
names it needs keeps its default lowering.

`normal(key, shape)` draws jax.random.normal(key, shape)'s numbers as one flat
vector and reshapes it. The numbers are the same (Threefry's counters run over
the flattened index either way), but XLA's CPU loops vectorise along the last
axis: drawn in a shape like [1, 3, 100, 5, 5, 6], the hash and erf_inv run on
six lanes at a time (45,000 normals: 1.3 ms, against 0.26 ms drawn flat). The flat
draw is written to memory once (`written_once`), so that no consumer recomputes it in
its own layout.
"""

from __future__ import annotations

import functools
import math

import jax


@functools.cache
def unroll_threefry_on_cpu() -> bool:
  """Lower threefry2x32 on the CPU without the rolled loop; True if the lowering was registered."""
  try:
    from jax._src.random import threefry2x32 as threefry
    from jax.extend.random import threefry2x32_p
    from jax.interpreters import mlir
    straight = threefry._threefry2x32_lowering_rule  # the lowering of the other platforms
  except (ImportError, AttributeError):
    return False
  mlir.register_lowering(threefry2x32_p, straight, platform="cpu")
  return True


def written_once(x: jax.Array) -> jax.Array:
  """x, computed once into memory: a sum of x and zeros, a reduction, which XLA does not
  fuse into the consumers of its result. Without it, XLA's CPU fusion copies a draw's
  hash and erf_inv into every fusion that reads the draw, the backward passes' too, and
  there runs them in the consumer's layout: along a 6-wide latent axis, one element at a
  time (the released preset's initial-policy step spent about 0.2 ms of 3.5 ms so).
  x + 0 is x (-0.0 becomes +0.0)."""
  return jax.numpy.sum(jax.numpy.stack([x, jax.numpy.zeros_like(x)]), axis=0)


def normal(key: jax.Array, shape: tuple[int, ...], dtype=jax.numpy.float32) -> jax.Array:
  """jax.random.normal(key, shape, dtype), drawn flat and written once (see the module's
  docstring and `written_once`)."""
  return written_once(jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)
