"""`python -m bracplus_jax.evidence` is `bracplus evidence`, the command of
`bracplus_jax.studies.evidence`; `import bracplus_jax.evidence` gives that module itself."""

import sys

from bracplus_jax.cli import run_command

if __name__ == "__main__":
  run_command("bracplus_jax.studies.evidence", "bracplus evidence")
else:
  from bracplus_jax.studies import evidence
  sys.modules[__name__] = evidence
