"""bracplus: the one command of the package, with a subcommand for every job.

  bracplus train --config=hopper_local        train BRAC+ (bracplus train --help)
  bracplus <command> --help                   a command's own flags

Each command takes exactly the flags of its module, which also runs as
`python -m bracplus_jax.<command>` (and `python launch.py` for train).
"""

from __future__ import annotations

import sys
from typing import NamedTuple, Optional


PROGRAM = "bracplus"


class Command(NamedTuple):
  module: str  # the module whose main (and flags, and docstring as usage) the command runs
  summary: str  # one line for `bracplus --help`


COMMANDS = {
    "train": Command("bracplus_jax.launch", "train BRAC+ (or BC) from a config: --config=hopper_local"),
    "evaluate": Command("bracplus_jax.evaluate", "evaluate a saved run's policies again: <run dir>"),
    "collect": Command("bracplus_jax.collection.collect",
                       "make D4RL-style datasets (random, medium, mixed, expert, ...) in a MuJoCo env"),
    "data": Command("bracplus_jax.data.__main__", "what a dataset holds: <spec> (d4rl:, minari:, hdf5:)"),
    "evidence": Command("bracplus_jax.studies.evidence",
                        "BRAC+ against behaviour cloning on data made here, with confidence intervals"),
    "combine": Command("bracplus_jax.studies.combined",
                       "the evidence of several environments in one table and figure: --results=DIR,..."),
    "ablate": Command("bracplus_jax.studies.ablate", "the paper's ablations (Fig. 2), one run per variant"),
    "report": Command("bracplus_jax.studies.report", "the paper's run figures and a table, from run directories"),
    "toys": Command("bracplus_jax.studies.toys", "the paper's two appendix toys (Fig. 4 and 5)"),
}


def version() -> str:
  """The installed distribution's version (setuptools-scm: from the git tag and commit)."""
  from bracplus_jax import __version__
  return __version__


def usage(program: str = PROGRAM) -> str:
  width = max(len(name) for name in COMMANDS)
  lines = [f"usage: {program} <command> [flags]   ({program} <command> --help: the command's flags)",
           "", "BRAC+ offline reinforcement learning in JAX.", "", "commands:"]
  lines += [f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()]
  lines += ["", "--config takes a packaged config's name (hopper_local, hopper_local:mixed, hopper_mixed,",
            "evidence, ...) or the path to a config file of your own.",
            f"{program} --version prints the version."]
  return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
  """The console script: `bracplus <command> [flags]` runs the command's module as the program."""
  argv = list(sys.argv if argv is None else argv)
  program = PROGRAM
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help", "--helpshort", "--helpfull"):
    print(usage(program), file=sys.stdout if len(argv) >= 2 else sys.stderr)
    sys.exit(0 if len(argv) >= 2 else 2)
  if argv[1] == "--version":
    print(f"{program} {version()}")
    return
  name = argv[1]
  if name not in COMMANDS:
    print(f"error: unknown command '{name}'; expected one of {', '.join(COMMANDS)} "
          f"({program} --help says what each does)", file=sys.stderr)
    sys.exit(2)
  from bracplus_jax.cli import run_command
  # The command parses the rest as its own command line; config overrides are read from sys.argv.
  sys.argv = [f"{program} {name}", *argv[2:]]
  run_command(COMMANDS[name].module, f"{program} {name}")


if __name__ == "__main__":  # python -m bracplus_jax.commands, the console script without installing
  main()
