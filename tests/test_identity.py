"""A dataset's checksum: the values of its arrays, however they were stored."""

import hashlib

import numpy as np
from conftest import episodes_dataset

from bracplus_jax import data
from bracplus_jax.data import identity


def test_the_checksum_is_sha256_of_the_arrays_canonical_bytes(d4rl_file):
  arrays = episodes_dataset([5, 7], ["terminal", "timeout"])
  raw = data.read_raw("hdf5:" + d4rl_file(**arrays))
  digest = hashlib.sha256()
  for name, dtype in (("observations", "<f4"), ("actions", "<f4"), ("rewards", "<f4"),
                      ("terminals", "u1"), ("timeouts", "u1")):
    values = np.asarray(arrays[name], dtype).reshape(12, -1)
    digest.update(f"{name}{values.shape}".encode() + values.tobytes())
  assert identity.arrays_checksum(raw) == digest.hexdigest()


def test_the_checksum_follows_values_not_storage(d4rl_file):
  arrays = episodes_dataset([5, 7], ["terminal", "timeout"])
  stored_otherwise = {**arrays, "rewards": arrays["rewards"].astype(np.float64),
                      "terminals": arrays["terminals"].astype(np.int8)}
  checksum = data.load_dataset("hdf5:" + d4rl_file(name="a.hdf5", **arrays), progress=False).checksum
  assert checksum == identity.arrays_checksum(data.read_raw("hdf5:" + d4rl_file(name="b.hdf5", **stored_otherwise)))
  changed = {**arrays, "rewards": arrays["rewards"] + np.float32(1e-3)}
  assert checksum != identity.arrays_checksum(data.read_raw("hdf5:" + d4rl_file(name="c.hdf5", **changed)))


def test_results_record_the_code_s_version_and_commit(monkeypatch):
  import pathlib
  import subprocess
  root = pathlib.Path(__file__).resolve().parents[1]
  head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
  identity.git_commit.cache_clear()
  versions = identity.run_versions()
  assert versions["bracplus-jax"] == identity.library_versions()["bracplus-jax"]
  assert versions["bracplus-jax commit"].removesuffix("-dirty") == head  # this clone's commit
  identity.git_commit.cache_clear()

  def no_git(*args, **kwargs):
    raise FileNotFoundError("git")

  monkeypatch.setattr(identity.subprocess, "run", no_git)
  assert identity.run_versions()["bracplus-jax commit"] is None  # no git, or no checkout
  identity.git_commit.cache_clear()
