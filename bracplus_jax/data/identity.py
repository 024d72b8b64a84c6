"""What tells one dataset from another: a checksum of its arrays' values.

Files of one recipe made on two machines, or with two library versions, differ a
little; a result is only comparable with another made on the same arrays, so
every run and study records this checksum beside its numbers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import subprocess
from typing import Optional

import numpy as np

from bracplus_jax.data.raw import RawDataset

# Canonical byte layouts, so the checksum depends on the values and not on how they were
# stored (float64 or float32 rewards, bool or 0/1 flags).
_LAYOUT = (("observations", "<f4"), ("actions", "<f4"), ("rewards", "<f4"), ("terminals", "u1"),
           ("timeouts", "u1"), ("next_observations", "<f4"))


def arrays_checksum(raw: RawDataset) -> str:
  """sha256 of the rows' arrays, each as little-endian float32 (flags as bytes), in a fixed
  order with its name and shape; `next_observations` counts where the source stores it."""
  digest = hashlib.sha256()
  for name, dtype in _LAYOUT:
    array = getattr(raw, name)
    if array is None:
      continue
    values = np.ascontiguousarray(np.asarray(array).reshape(len(raw.rewards), -1), dtype=dtype)
    digest.update(f"{name}{values.shape}".encode())
    digest.update(values.tobytes())
  return digest.hexdigest()


VERSIONED_PACKAGES = ("bracplus-jax", "gymnasium", "mujoco", "numpy", "jax", "jaxlib", "flax", "optax")


def library_versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
  """The installed version of each package that makes or reads the data ("not installed")."""
  versions = {}
  for package in packages:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = "not installed"
  return versions


def run_versions() -> dict[str, Optional[str]]:
  """What every results JSON records: `library_versions()`, whose `bracplus-jax` is the
  installed version (setuptools-scm: a tag, or after it the next version .devN+g<commit>), and
  `bracplus-jax commit`, the commit of the git checkout the code runs from ('<sha>-dirty' with changes not
  committed; None outside a git checkout, e.g. an installed wheel)."""
  return library_versions() | {"bracplus-jax commit": git_commit()}


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
  """The commit of the git checkout this package is imported from ('<sha>-dirty' when the
  package's tracked files have changes not committed); None when it is not in one (an installed
  wheel) or git is missing."""
  source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    top = _git(source, "rev-parse", "--show-toplevel")
    if not os.path.isdir(os.path.join(top, "bracplus_jax")) or os.path.realpath(top) != os.path.realpath(source):
      return None  # a git repository around an installed package (a venv inside a clone), not this code's
    commit = _git(source, "rev-parse", "HEAD")
    dirty = _git(source, "status", "--porcelain", "--untracked-files=no", "--", "bracplus_jax")
  except (OSError, subprocess.SubprocessError):
    return None
  return f"{commit}-dirty" if dirty else commit


def _git(folder: str, *args: str) -> str:
  result = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10,
                          check=True)
  return result.stdout.strip()
