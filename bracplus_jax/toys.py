"""The appendix toys' old name: `python -m bracplus_jax.toys` runs the command of
`bracplus_jax.studies.toys`, and importing `bracplus_jax.toys` gives that module."""

import sys

from bracplus_jax.cli import run_command
from bracplus_jax.studies import toys

if __name__ == "__main__":
  run_command(toys)
else:
  sys.modules[__name__] = toys
