"""`python -m bracplus_jax.collect` is `bracplus collect`, the command of
`bracplus_jax.collection.collect`; `from bracplus_jax import collect` gives that module itself."""

import sys

from bracplus_jax.cli import run_command
from bracplus_jax.collection import collect

if __name__ == "__main__":
  run_command(collect)
else:
  sys.modules[__name__] = collect
