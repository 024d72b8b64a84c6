"""The paper's studies, each a command built on training runs and the files they leave.

  toys.py       the appendix toys, Fig. 4 and 5 (`python -m bracplus_jax.toys`)
  ablate.py     the ablations of Fig. 2, one run per variant (`python -m bracplus_jax.ablate`)
  report.py     figures and a table from run directories (`python -m bracplus_jax.report`)
  evidence.py   BRAC+ against behaviour cloning, with confidence intervals
                (`python -m bracplus_jax.evidence`)
  outputs.py    what they write alike: Markdown tables, PNG figures, files never overwritten
  run_files.py  what they read back from run directories, and the names of the files one
                study leaves for another

A study may import every wing below it (the run machinery, the algorithm, collection/,
data/ and the modules every wing shares) and the two shared modules here; never another
study.
"""
