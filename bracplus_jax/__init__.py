"""BRAC+ offline reinforcement learning in JAX.

The package is in wings, and imports run one way, from a wing to those below it:
commands (`bracplus`) -> studies/ -> the run machinery (launch, experiment, evaluate,
evaluation, checkpoints, run_log) and configs/ (the packaged configs) -> the algorithm (train,
learner, losses, config, sweep; networks, distributions and random_bits its building blocks)
-> data/; collection/ makes datasets on the building blocks alone, and errors, cli, envs,
extras and files serve every wing. The README's Layout section has
the whole map; tests/test_layout.py checks it. This module imports nothing of the package.

`bracplus` is the command line (`bracplus --help`); `__version__` is the installed version,
from git through setuptools-scm.
"""

from importlib import metadata as _metadata

try:
  __version__ = _metadata.version("bracplus-jax")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
  __version__ = "0+unknown"
