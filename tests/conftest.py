"""Shared fixtures: files written in D4RL's exact HDF5 layout."""

import atexit
import os
import shutil
import tempfile

# Tests compile many small programs: skip LLVM's expensive passes (about 2x faster
# compiles here); the programs' results do not depend on them beyond rounding.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0")
# Many tests build the same programs again (a resumed run, the command-line runs in
# subprocesses): one on-disk compilation cache for the session, shared with subprocesses.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bracplus-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import importlib  # noqa: E402
import pkgutil  # noqa: E402
import sys  # noqa: E402

import h5py  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import bracplus_jax.configs  # noqa: E402

# The configs used to sit beside the package, as `configs`; test modules that still import
# `from configs import base` get the packaged modules themselves (one module per file).
sys.modules.setdefault("configs", bracplus_jax.configs)
for _module in pkgutil.iter_modules(bracplus_jax.configs.__path__):
  sys.modules.setdefault(f"configs.{_module.name}",
                         importlib.import_module(f"bracplus_jax.configs.{_module.name}"))


def write_d4rl_file(path, metadata=None, **arrays):
  """Writes arrays under their keys ('infos/qpos' makes a group), as D4RL's files hold them."""
  with h5py.File(path, "w") as file:
    for key, value in arrays.items():
      file.create_dataset(key, data=value)
    for key, value in (metadata or {}).items():
      file[f"metadata/{key}"] = value
  return str(path)


def episodes_dataset(episode_lengths, ends, obs_dim=3, act_dim=2, seed=0):
  """Rows for episodes of the given lengths; ends[i] is 'terminal', 'timeout' or 'cut'."""
  rng = np.random.default_rng(seed)
  rows = sum(episode_lengths)
  terminals = np.zeros(rows, bool)
  timeouts = np.zeros(rows, bool)
  last = np.cumsum(episode_lengths) - 1
  for index, end in zip(last, ends):
    terminals[index] = end == "terminal"
    timeouts[index] = end == "timeout"
  return dict(
      observations=rng.normal(size=(rows, obs_dim)).astype(np.float32),
      actions=rng.uniform(-1, 1, size=(rows, act_dim)).astype(np.float32),
      rewards=rng.normal(size=rows).astype(np.float32),
      terminals=terminals,
      timeouts=timeouts,
  )


@pytest.fixture
def d4rl_file(tmp_path):
  def make(name="data.hdf5", metadata=None, **arrays):
    return write_d4rl_file(tmp_path / name, metadata=metadata, **arrays)
  return make


@pytest.fixture
def float64():
  """Double precision for finite-difference checks, restored afterwards."""
  previous = jax.config.read("jax_enable_x64")
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)
