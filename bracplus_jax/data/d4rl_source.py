"""D4RL datasets by name: the public HDF5 files, found locally or downloaded into a cache."""

from __future__ import annotations

import os
import pathlib
import time
from typing import Optional

import tqdm

from bracplus_jax.data import scores
from bracplus_jax.errors import InputError
from bracplus_jax.files import atomic_path

_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
# A download is tried this many more times after a failed transfer, waiting 1 x, 2 x, ... this long.
DOWNLOAD_RETRIES = 3
RETRY_WAIT_SECONDS = 2.0
DOWNLOAD_TIMEOUT_SECONDS = 60
# Dataset name -> pooch's known_hash ("sha256:<hex>") of its file. D4RL publishes no hashes
# for its files, so none is listed: a hash goes here only once it is checked against a source
# beside the download itself. Files without one are taken as downloaded (complete, since a
# transfer shorter than its Content-Length fails and is retried).
KNOWN_HASHES: dict[str, str] = {}
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

  The download (pooch, with `DOWNLOAD_RETRIES` retries and a progress bar) goes to a
  temporary name in the cache folder, is checked against `KNOWN_HASHES` where the file's
  hash is known, and is renamed into place only once complete and synced to disk
  (`files.atomic_path`), so a partial file is never taken for a dataset.
  """
  target = local_path(name)
  if target.is_file():
    return target
  from_d4rl = _d4rl_package_path(name)
  if from_d4rl is not None:
    return from_d4rl
  url = dataset_url(name)
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(str(target)) as partial:
      _download(url, pathlib.Path(partial), KNOWN_HASHES.get(name), progress, desc=f"d4rl:{name}")
  except (ValueError, OSError) as error:  # requests' (OSErrors), pooch's hash check, the disk's
    if isinstance(error, InputError):
      raise
    raise InputError(
        f"could not download d4rl:{name} from {url} ({_reason(error)}); "
        f"download that file by hand and put it at {target}") from error
  return target


def _reason(error: Exception) -> str:
  reason = getattr(error, "reason", None) or error
  return str(reason).strip().splitlines()[0] if str(reason).strip() else type(error).__name__


class _ProgressBar(tqdm.tqdm):
  """A tqdm bar pooch fills in (it sets the total from Content-Length); pooch asks bool(bar),
  which tqdm answers from the total, so it says True here."""

  def __bool__(self) -> bool:
    return True


def _download(url: str, path: pathlib.Path, known_hash: Optional[str], progress: bool, desc: str) -> None:
  """`url` into `path` through pooch, retried up to `DOWNLOAD_RETRIES` times after a failed
  transfer or a hash that differs from `known_hash` (None: not checked)."""
  try:
    import pooch
  except ModuleNotFoundError as error:  # both are core dependencies; an install without them
    raise InputError(f"downloading D4RL's files needs '{error.name}': pip install pooch") from error
  pooch.get_logger().setLevel("WARNING")  # the progress bar says what is downloaded
  for attempt in range(DOWNLOAD_RETRIES + 1):
    bar = _ProgressBar(total=0, unit="B", unit_scale=True, desc=desc, disable=not progress, leave=True,
                       dynamic_ncols=True)
    try:
      pooch.retrieve(url, known_hash, fname=path.name, path=path.parent, progressbar=False,
                     downloader=pooch.HTTPDownloader(progressbar=bar if progress else False,
                                                     timeout=DOWNLOAD_TIMEOUT_SECONDS))
      return
    except (ValueError, OSError):  # requests' errors are OSErrors; a hash that differs, a ValueError
      path.unlink(missing_ok=True)
      if attempt == DOWNLOAD_RETRIES:
        raise
      time.sleep(RETRY_WAIT_SECONDS * (attempt + 1))
    finally:
      bar.close()
