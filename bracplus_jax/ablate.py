"""`python -m bracplus_jax.ablate` is `bracplus ablate`, the command of
`bracplus_jax.studies.ablate`; `import bracplus_jax.ablate` gives that module itself."""

import sys

from bracplus_jax.cli import run_command

if __name__ == "__main__":
  run_command("bracplus_jax.studies.ablate", "bracplus ablate")
else:
  from bracplus_jax.studies import ablate
  sys.modules[__name__] = ablate
