"""What every command-line entry point shares: bad input is one line on stderr, not a traceback."""

from __future__ import annotations

import functools
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from types import ModuleType
from typing import Callable, Optional

from bracplus_jax.errors import InputError, RunError


def exits_cleanly_on_input_errors(main: Callable[..., None]) -> Callable[..., None]:
  """Wraps an absl main so an InputError prints 'error: <message>' and exits with status 2,
  and a RunError (a run stopped while training) prints the same and exits with status 1."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    # JAX's search for accelerators and orbax's every save log at INFO, which absl would
    # print; the commands' own output says what matters.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      return main(*args, **kwargs)
    except InputError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)
    except RunError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(1)

  return wrapped


def refuse_arguments(argv: list[str]) -> None:
  """Every option of these commands is a --flag: a bare word after the command is a mistake."""
  if len(argv) > 1:
    raise InputError(f"unexpected arguments {argv[1:]}; every option is a --flag")


def run_command(module: ModuleType,
                flags_parser: Optional[Callable[[list[str]], list[str]]] = None) -> None:
  """Runs a command's module as the program, from an entry module under another name: its
  flags, its main, and its docstring as the usage --help prints."""
  sys.modules["__main__"].__doc__ = module.__doc__
  module.define_flags()
  app.run(module.main, flags_parser=flags_parser or app.parse_flags_with_usage)


def _config_path(argv: list[str]) -> str:
  for index, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":")[0]
    if arg == "--config" and index + 1 < len(argv):
      return argv[index + 1].split(":")[0]
  return ""


def config_flags_parser(example: str):
  """An absl `flags_parser` for commands with a `--config` file flag (ml_collections).

  A bad flag, a missing config file, one without get_config() and an unknown
  config field each become one 'error:' line and exit status 2, instead of a
  traceback from deep inside the flag library.
  """

  def parse(argv: list[str]) -> list[str]:
    path = _config_path(argv)
    try:
      if path and not os.path.isfile(path):
        raise flags.Error(f"--config: {path} does not exist; expected a config file such as {example}")
      parsed = flags.FLAGS(argv)
      if flags.FLAGS["config"].present:
        flags.FLAGS.config.to_dict()  # overrides apply lazily: apply them now, while errors are clear
      return parsed
    except flags.Error as error:
      lines = str(error).strip().splitlines()
      message = lines[0]
      if "Error whilst parsing config file" in message:  # get_config raised; the trace's last line says why
        message = f"--config: cannot load {path} ({lines[-1].strip()})"
    except AttributeError as error:
      detail = str(error).strip().splitlines()[-1]
      if "get_config" in detail:
        message = f"--config: {path} defines no get_config()"
      else:
        field = detail.strip("\"' ")
        message = f"--config: {path} has no field '{field}'; every field is in configs/base.py"
    except (OSError, KeyError, ValueError, TypeError, SyntaxError) as error:
      message = f"--config: cannot load {path} ({str(error).strip().splitlines()[-1]})"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)

  return parse
