"""D4RL datasets by name: the public HDF5 files, found locally or downloaded into a cache."""

from __future__ import annotations

import os
import pathlib
import urllib.error
import urllib.request
from typing import Optional

import tqdm

from bracplus_jax.data import scores
from bracplus_jax.errors import InputError

_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
_LOCOMOTION = ("halfcheetah", "hopper", "walker2d", "ant")
_LOCOMOTION_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
_ADROIT = ("pen", "hammer", "door", "relocate")
# v0 file names differ from the dataset names (medium-replay was called mixed).
_V0_LOCOMOTION_FILE = {"medium-replay": "mixed"}
_V0_ADROIT_FILE = {
    "human": "{env}-v0_demos_clipped",
    "cloned": "{env}-demos-v0-bc-combined",
    "expert": "{env}-v0_expert_clipped",
}
# Episode lengths, for v0 files that lack a `timeouts` key.
MAX_EPISODE_STEPS = {"pen": 100, "hammer": 200, "door": 200, "relocate": 200}
_DEFAULT_MAX_EPISODE_STEPS = 1000
# gymnasium ids whose observation and action spaces match the D4RL datasets.
_GYMNASIUM_IDS = {
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
    "halfcheetah": "HalfCheetah-v5",
    "ant": "Ant-v5",
    "pen": "AdroitHandPen-v1",
    "hammer": "AdroitHandHammer-v1",
    "door": "AdroitHandDoor-v1",
    "relocate": "AdroitHandRelocate-v1",
}


def _dataset_urls() -> dict[str, str]:
  urls = {}
  for env in _LOCOMOTION:
    for kind in _LOCOMOTION_KINDS:
      v0_kind = _V0_LOCOMOTION_FILE.get(kind, kind).replace("-", "_")
      v0_env = "walker" if (env == "walker2d" and kind == "medium-replay") else env
      urls[f"{env}-{kind}-v0"] = f"{_BASE_URL}/gym_mujoco/{v0_env}_{v0_kind}.hdf5"
      for version in ("v1", "v2"):
        file = f"{env}_{kind.replace('-', '_')}-{version}"
        urls[f"{env}-{kind}-{version}"] = f"{_BASE_URL}/gym_mujoco_{version}/{file}.hdf5"
    for version in ("v1", "v2"):
      file = f"{env}_full_replay-{version}"
      urls[f"{env}-full-replay-{version}"] = f"{_BASE_URL}/gym_mujoco_{version}/{file}.hdf5"
  for env in _ADROIT:
    for kind, pattern in _V0_ADROIT_FILE.items():
      urls[f"{env}-{kind}-v0"] = f"{_BASE_URL}/hand_dapg/{pattern.format(env=env)}.hdf5"
      urls[f"{env}-{kind}-v1"] = f"{_BASE_URL}/hand_dapg_v1/{env}-{kind}-v1.hdf5"
  return urls


DATASET_URLS = _dataset_urls()


def known_names() -> list[str]:
  return sorted(DATASET_URLS)


def cache_dir() -> pathlib.Path:
  """Where downloaded datasets live: $BRACPLUS_DATA, else ~/.cache/bracplus_jax."""
  root = os.environ.get("BRACPLUS_DATA") or os.path.join(
      os.path.expanduser("~"), ".cache", "bracplus_jax")
  return pathlib.Path(root)


def dataset_url(name: str) -> str:
  if name not in DATASET_URLS:
    raise InputError(
        f"unknown D4RL dataset 'd4rl:{name}'; known names: {', '.join(known_names())}")
  return DATASET_URLS[name]


def local_path(name: str) -> pathlib.Path:
  """The cache path a dataset is downloaded to (and where a user may put it by hand)."""
  return cache_dir() / "d4rl" / os.path.basename(dataset_url(name))


def gymnasium_id(name: str) -> Optional[str]:
  return _GYMNASIUM_IDS.get(name.split("-")[0])


def max_episode_steps(name: str) -> int:
  return MAX_EPISODE_STEPS.get(name.split("-")[0], _DEFAULT_MAX_EPISODE_STEPS)


def reference_returns(name: str) -> Optional[tuple[float, float]]:
  return scores.d4rl_reference_returns(name)


def _d4rl_package_path(name: str) -> Optional[pathlib.Path]:
  """A file the `d4rl` package already downloaded, when that package is installed."""
  try:
    from d4rl import offline_env  # pytype: disable=import-error
  except Exception:  # d4rl is optional, and importing it can fail in many ways
    return None
  path = pathlib.Path(offline_env.DATASET_PATH) / os.path.basename(dataset_url(name))
  return path if path.is_file() else None


def fetch(name: str, progress: bool = True) -> pathlib.Path:
  """The local file of a D4RL dataset, downloaded first if it is not cached yet.

  The download goes to a temporary name in the cache folder and is renamed
  only once complete, so a partial file is never taken for a dataset.
  """
  target = local_path(name)
  if target.is_file():
    return target
  from_d4rl = _d4rl_package_path(name)
  if from_d4rl is not None:
    return from_d4rl
  url = dataset_url(name)
  target.parent.mkdir(parents=True, exist_ok=True)
  partial = target.with_name(f"{target.name}.part-{os.getpid()}")
  try:
    _download(url, partial, progress, desc=f"d4rl:{name}")
    os.replace(partial, target)
  except (urllib.error.URLError, OSError, TimeoutError) as error:
    raise InputError(
        f"could not download d4rl:{name} from {url} ({_reason(error)}); "
        f"download that file by hand and put it at {target}") from error
  finally:
    partial.unlink(missing_ok=True)
  return target


def _reason(error: Exception) -> str:
  return str(getattr(error, "reason", None) or error)


def _download(url: str, path: pathlib.Path, progress: bool, desc: str) -> None:
  with urllib.request.urlopen(url, timeout=30) as response:
    total = int(response.headers.get("Content-Length") or 0) or None
    with open(path, "wb") as out, tqdm.tqdm(
        total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
      while chunk := response.read(1 << 20):
        out.write(chunk)
        bar.update(len(chunk))
    if total is not None and path.stat().st_size != total:
      raise OSError(f"connection closed after {path.stat().st_size} of {total} bytes")
