"""What every command-line entry point shares: bad input is one line on stderr, not a traceback."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags
from types import ModuleType
from typing import Callable, Optional

from bracplus_jax import extras
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


def run_command(module: ModuleType | str, name: str = "this command") -> None:
  """Runs a command's module (or the module of that name) as the program, for `bracplus
  <command>` and the `python -m bracplus_jax.<command>` entry modules alike: its flags
  (`define_flags()`, where the module defines them only when it runs), its main, and its
  docstring as the usage --help prints. A module with a `CONFIG_EXAMPLE` has a --config flag,
  parsed by `config_flags_parser`. A module imported here that needs an extra which is not
  installed stops the command with one line naming the pip command."""
  if isinstance(module, str):
    try:
      module = importlib.import_module(module)
    except ModuleNotFoundError as error:
      problem = extras.missing_extra(error, name)
      if problem is None:
        raise
      print(f"error: {problem}", file=sys.stderr)
      sys.exit(2)
  sys.modules["__main__"].__doc__ = module.__doc__
  if hasattr(module, "define_flags"):
    module.define_flags()
  example = getattr(module, "CONFIG_EXAMPLE", None)
  app.run(module.main, flags_parser=config_flags_parser(example) if example else app.parse_flags_with_usage)


# ---------------------------------------------------------------------------
# --config: a packaged config by name, or a file of one's own
# ---------------------------------------------------------------------------

# The configs the package ships (bracplus_jax/configs/<name>.py).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def packaged_configs() -> list[str]:
  """The names of the packaged configs: 'hopper_local', 'evidence', ..."""
  return sorted(name[:-3] for name in os.listdir(CONFIGS_DIR)
                if name.endswith(".py") and name not in ("__init__.py", "base.py"))


def resolve_config(spec: str) -> str:
  """The file (and ':argument') a --config value names.

  A file that exists is taken as it is: a config of one's own. Otherwise a packaged config
  by name: `hopper_local`, `hopper_local:mixed`, `evidence`, or the clone-relative spelling
  of earlier versions, `configs/hopper_local.py[:mixed]`. Anything else comes back as given
  (and is reported missing)."""
  path, colon, argument = spec.partition(":")
  expanded = os.path.expanduser(path)
  if not path or os.path.isfile(expanded):
    return expanded + colon + argument
  name = path.replace(os.sep, "/").removeprefix("./").removeprefix("configs/").removesuffix(".py")
  packaged = os.path.join(CONFIGS_DIR, f"{name}.py")
  if "/" not in name and name not in ("__init__", "") and os.path.isfile(packaged):
    return packaged + colon + argument
  return spec


class _ConfigNameParser(flags.ArgumentParser):
  """ml_collections' config file parser, taking a packaged config's name as well as a path."""

  def __init__(self, parser: flags.ArgumentParser):
    self._parser = parser

  def parse(self, argument):
    return self._parser.parse(resolve_config(argument) if isinstance(argument, str) else argument)

  def flag_type(self) -> str:
    return self._parser.flag_type()


def define_config_flag(default: Optional[str], help_string: str, name: str = "config"):
  """A --config flag (ml_collections' config file flag, overrides --config.<field>=... and
  all) whose value is a packaged config's name or a path, see `resolve_config`."""
  holder = config_flags.DEFINE_config_file(
      name, resolve_config(default) if default else None, help_string, lock_config=True)
  flag = flags.FLAGS[name]
  flag.parser = _ConfigNameParser(flag.parser)
  if default:
    flag.default_as_str = repr(default)
  return holder


def _config_path(argv: list[str]) -> str:
  """The --config value's file part, as given."""
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
      if path and not os.path.isfile(resolve_config(path).split(":")[0]):
        raise flags.Error(
            f"--config: {path} does not exist; expected a packaged config ({', '.join(packaged_configs())}), "
            f"e.g. --config={example}, or the path to a config file of your own")
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
        message = f"--config: {path} has no field '{field}'; every field is in bracplus_jax/configs/base.py"
    except (OSError, KeyError, ValueError, TypeError, SyntaxError) as error:
      message = f"--config: cannot load {path} ({str(error).strip().splitlines()[-1]})"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)

  return parse
