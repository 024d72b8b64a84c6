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
six lanes at a time (45,000 normals: 1.3 ms, against 0.26 ms drawn flat).
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


def normal(key: jax.Array, shape: tuple[int, ...], dtype=jax.numpy.float32) -> jax.Array:
  """jax.random.normal(key, shape, dtype), drawn flat (see the module's docstring)."""
  return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)
