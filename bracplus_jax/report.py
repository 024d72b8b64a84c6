"""Kept at its old name for users' command lines and imports: `python -m bracplus_jax.report`
draws the figures of `bracplus_jax.studies.report`, the module `bracplus_jax.report` now is."""

import sys

from bracplus_jax.cli import run_command
from bracplus_jax.studies import report

if __name__ == "__main__":
  run_command(report)
else:
  sys.modules[__name__] = report
