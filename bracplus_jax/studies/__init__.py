"""The paper's studies, each a command built on training runs and the files they leave.

  toys.py       the appendix toys, Fig. 4 and 5 (`bracplus toys`)
  ablate.py     the ablations of Fig. 2, one run per variant (`bracplus ablate`)
  report.py     figures and a table from run directories (`bracplus report`)
  evidence.py   BRAC+ against behaviour cloning, with confidence intervals
                (`bracplus evidence`)
  combined.py   the evidence of several environments in one table and figure
                (`bracplus combine`)
  outputs.py    what they write alike: Markdown tables, PNG figures, files never overwritten
  estimates.py  what they compute alike: IQMs and the probability of improvement with
                stratified-bootstrap CIs (rliable)
  run_files.py  what they read back from run directories, and the names of the files one
                study leaves for another

A study may import every wing below it (the run machinery, the algorithm, collection/,
data/ and the modules every wing shares) and the shared modules here; never another
study.
"""
