"""The optional parts of the package: which extra installs what, and one line when it is missing.

The core install trains and evaluates on gymnasium's MuJoCo tasks and D4RL's or one's own
HDF5 files; the rest comes with an extra, `pip install "bracplus-jax[<extra>]"`. A command
that needs a missing one stops with a single line naming the pip command, before any work.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from bracplus_jax.errors import InputError

DISTRIBUTION = "bracplus-jax"
# extra -> the modules it installs that the package imports.
EXTRAS = {
    "wandb": ("wandb",),
    "minari": ("minari",),
    "evidence": ("rliable", "pandas", "matplotlib"),
    "adroit": ("gymnasium_robotics",),
    "gym": ("gym", "shimmy"),
    "d4rl": ("d4rl", "gym", "shimmy"),
}
# A module -> the extra to install for it (the first that has it).
EXTRA_OF = {}
for _extra, _modules in EXTRAS.items():
  for _module in _modules:
    EXTRA_OF.setdefault(_module, _extra)


def install_hint(extra: str) -> str:
  return f'pip install "{DISTRIBUTION}[{extra}]"'


def missing_message(module: str, purpose: str, extra: str | None = None) -> str:
  extra = extra or EXTRA_OF.get(module.split(".")[0], "all")
  return f"{purpose} needs the optional package '{module.split('.')[0]}', which is not installed: {install_hint(extra)}"


def is_installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def require(extra: str, purpose: str) -> None:
  """Raises InputError ('<purpose> needs ...: pip install "bracplus-jax[<extra>]"') when a
  module of `extra` is not installed; imports nothing."""
  for module in EXTRAS[extra]:
    if not is_installed(module):
      raise InputError(missing_message(module, purpose, extra))


def import_optional(module: str, purpose: str) -> ModuleType:
  """`module`, imported; InputError naming its extra when it is not installed."""
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as error:
    if error.name and error.name.split(".")[0] in EXTRA_OF:
      raise InputError(missing_message(error.name, purpose)) from error
    raise


def missing_extra(error: ModuleNotFoundError, purpose: str) -> InputError | None:
  """The one-line InputError for an import that failed on a package an extra installs, else None."""
  if error.name and error.name.split(".")[0] in EXTRA_OF:
    return InputError(missing_message(error.name, purpose))
  return None
