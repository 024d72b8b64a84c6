"""`python -m bracplus_jax.toys` is `bracplus toys`, the command of
`bracplus_jax.studies.toys`; `import bracplus_jax.toys` gives that module itself."""

import sys

from bracplus_jax.cli import run_command

if __name__ == "__main__":
  run_command("bracplus_jax.studies.toys", "bracplus toys")
else:
  from bracplus_jax.studies import toys
  sys.modules[__name__] = toys
