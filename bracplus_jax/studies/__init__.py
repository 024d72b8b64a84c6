"""The paper's studies, each a command built on training runs and their files: the appendix
toys (toys.py), the ablations (ablate.py), figures and tables from run directories
(report.py) and BRAC+ against behaviour cloning with confidence intervals (evidence.py).

They may import every wing below them: the run machinery, the algorithm, collection/, data/
and the modules every wing shares.
"""
