"""Trains BRAC+ from a config, as `bracplus train` does: python launch.py --config=hopper_local

Every flag is `bracplus train`'s (`bracplus train --help`); the command lives in
`bracplus_jax.launch`.
"""

from bracplus_jax import launch
from bracplus_jax.cli import run_command

if __name__ == "__main__":
  run_command(launch)
