"""`python -m bracplus_jax.report` is `bracplus report`, the command of
`bracplus_jax.studies.report`; `import bracplus_jax.report` gives that module itself."""

import sys

from bracplus_jax.cli import run_command

if __name__ == "__main__":
  run_command("bracplus_jax.studies.report", "bracplus report")
else:
  from bracplus_jax.studies import report
  sys.modules[__name__] = report
