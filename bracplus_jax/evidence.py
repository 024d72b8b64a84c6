"""The evidence command and module under their old name, `bracplus_jax.evidence`, for command
lines, scripts and the README; they live in `bracplus_jax.studies.evidence`."""

import sys

from bracplus_jax.cli import config_flags_parser, run_command
from bracplus_jax.studies import evidence

if __name__ == "__main__":
  run_command(evidence, config_flags_parser("configs/evidence.py"))
else:
  sys.modules[__name__] = evidence
