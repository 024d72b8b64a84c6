"""`python -m bracplus_jax.combine` is `bracplus combine`, the command of
`bracplus_jax.studies.combined`; `import bracplus_jax.combine` gives that module itself."""

import sys

from bracplus_jax.cli import run_command

if __name__ == "__main__":
  run_command("bracplus_jax.studies.combined", "bracplus combine")
else:
  from bracplus_jax.studies import combined
  sys.modules[__name__] = combined
