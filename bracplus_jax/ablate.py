"""`python -m bracplus_jax.ablate`, the ablations' command under its old name; the code is in
`bracplus_jax.studies.ablate`, which `import bracplus_jax.ablate` also gives."""

import sys

from bracplus_jax.cli import config_flags_parser, run_command
from bracplus_jax.studies import ablate

if __name__ == "__main__":
  run_command(ablate, config_flags_parser("configs/hopper_local.py"))
else:
  sys.modules[__name__] = ablate
