"""Malformed files, generated: each one loads, or stops with one InputError line naming it.

Files in the three formats the package reads (D4RL's HDF5 layout through `hdf5:` and
`d4rl:` specs, the collector's files with their `metadata/*`, and Minari datasets) get
random defects: wrong dtypes, shapes and lengths, missing, extra and unreadable keys,
NaN and Inf, empty arrays, bad metadata, truncated or foreign files. Loading them through
`data.load_dataset` and through `python -m bracplus_jax.data` must succeed where the defect
is harmless and otherwise raise exactly one one-line InputError; any other exception fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shutil
import tempfile
import warnings
from typing import Any, Callable, Optional

import gymnasium as gym
import h5py
import hypothesis
import minari
import minari.storage.hosting
import numpy as np
import pytest
from absl import flags
from hypothesis import strategies as st
from minari.data_collector.episode_buffer import EpisodeBuffer

from bracplus_jax import data
from bracplus_jax.collect import write_dataset
from bracplus_jax.data import __main__ as data_command
from bracplus_jax.data import d4rl_source
from bracplus_jax.errors import InputError
from conftest import episodes_dataset, write_d4rl_file
from test_bad_input import assert_one_line_error, run_data_command

Writer = Callable[[h5py.Group, str], None]
REMOVED = None  # a change that deletes the key
SETTINGS = hypothesis.settings(
    max_examples=300, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
D4RL_NAME = "hopper-medium-v2"
MINARI_ID = "test/malformed/steps-v0"
COLLECTOR_METADATA = {"env_id": "Hopper-v5", "recipe": "random", "seed": 0,
                      "ref_min_score": -10.0, "ref_max_score": 30.0,
                      "versions/numpy": np.__version__}


# ---------------------------------------------------------------------------
# Ways to store an array: the stored form is the defect
# ---------------------------------------------------------------------------

def stored(values, **options) -> Writer:
  return lambda group, key: group.create_dataset(key, data=values, **options)


def stored_as_text(values) -> Writer:
  text = np.asarray(values).astype(str).astype(object)
  return stored(text, dtype=h5py.string_dtype())


def stored_as_references(shape) -> Writer:
  def write(group, key):
    group.create_dataset(key, data=np.full(shape, group.file.ref, dtype=h5py.ref_dtype))
  return write


def stored_as_ragged_rows(values) -> Writer:
  rows = np.empty(len(values), dtype=object)
  for index, row in enumerate(values):
    rows[index] = np.atleast_1d(row).astype(np.float32)
  return stored(rows, dtype=h5py.vlen_dtype(np.float32))


def stored_as_enum(values) -> Writer:
  flag = h5py.enum_dtype({"no": 0, "yes": 1}, basetype="i1")
  return stored(np.asarray(values, np.int8), dtype=flag)


def stored_as_group() -> Writer:
  return lambda group, key: group.create_group(key).create_dataset("inner", data=np.zeros(3))


def stored_outside_the_file(values) -> Writer:
  """Its bytes live in an external file that does not exist: h5py raises OSError on reading."""
  def write(group, key):
    folder = os.path.dirname(group.file.filename)
    external = os.path.join(folder, f"missing-{key.replace('/', '-')}.raw")
    group.create_dataset(key, shape=values.shape, dtype=values.dtype,
                         external=[(external, 0, h5py.h5f.UNLIMITED)])
  return write


def compound(values) -> np.ndarray:
  records = np.zeros(values.shape, dtype=[("value", "<f4"), ("flag", "i1")])
  records["value"] = values
  return records


def with_value(values, row: int, value) -> np.ndarray:
  changed = np.array(values, dtype=np.float64 if abs(value) > 1e38 else np.float32)
  changed.reshape(len(changed), -1)[row, 0] = value
  return changed


# ---------------------------------------------------------------------------
# Defects
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Defect:
  """A change to a file; `harmful` None where either a load or an InputError is right."""

  name: str
  key: Optional[str]  # the key it damages, None for the whole file
  harmful: Optional[bool]
  names_key: bool = False  # whether the message must name `key`
  changes: dict[str, Optional[Writer]] = dataclasses.field(default_factory=dict, repr=False)
  json_changes: dict[str, Any] = dataclasses.field(default_factory=dict)  # Minari's metadata.json
  corrupt: Optional[Callable[[pathlib.Path, np.random.Generator], None]] = dataclasses.field(
      default=None, repr=False)


def key_defects(key: str, values: np.ndarray, kind: str, row: int,
                reader_names_structure: bool = True) -> list[Defect]:
  """What can be wrong with one array; `kind` is 'vectors' [N, dim], 'numbers' or 'flags' [N]."""

  def bad(name, writer, names_key=True):
    return Defect(f"{key}: {name}", key, True, names_key, {key: writer})

  def fine(name, writer):
    return Defect(f"{key}: {name}", key, False, False, {key: writer})

  defects = [
      bad("byte strings", stored(values.astype("S24"))),
      bad("text", stored_as_text(values)),
      bad("complex", stored(values.astype(np.complex64))),
      bad("compound records", stored(compound(values))),
      bad("opaque bytes", stored(np.zeros(values.shape, "V4"))),
      bad("object references", stored_as_references(values.shape)),
      bad("ragged rows", stored_as_ragged_rows(values)),
      bad("a scalar", stored(values.reshape(-1)[0]), reader_names_structure),
      bad("rows missing", stored(values[:-2])),
      bad("rows added", stored(np.concatenate([values, values[:2]]))),
      bad("no rows", stored(values[:0])),
      bad("a group", stored_as_group(), reader_names_structure),
      bad("unreadable", stored_outside_the_file(values), reader_names_structure),
      Defect(f"{key}: a key beside it", key, False, False, {f"{key}_extra": stored(values)}),
  ]
  if kind == "vectors":
    defects += [
        bad("one column, 1-D", stored(values[:, 0])),
        bad("flattened", stored(values.reshape(-1))),
        bad("3-D", stored(values[:, :, None])),
        bad("no columns", stored(values[:, :0])),
        bad("transposed", stored(values.T)),
        fine("float16", stored(values.astype(np.float16))),
        fine("big-endian float64", stored(values.astype(">f8"))),
        fine("int8", stored(values.astype(np.int8))),
    ]
  else:
    defects += [
        fine("[N, 1]", stored(values[:, None])),
        bad("[N, 2]", stored(np.stack([values, values], axis=1))),
        bad("[1, N]", stored(values[None, :])),
        bad("[N, 1, 1]", stored(values[:, None, None])),
    ]
  if kind == "numbers":
    defects += [fine("float64", stored(values.astype(np.float64))),
                fine("int32", stored(values.astype(np.int32))),
                fine("float16", stored(values.astype(np.float16)))]
  if kind in ("vectors", "numbers"):
    defects += [bad(f"{value} at row {row}", stored(with_value(values, row, value)))
                for value in (np.nan, np.inf, -np.inf, 1e39)]
  if kind == "flags":
    defects += [fine("uint8", stored(values.astype(np.uint8))),
                fine("float64 0/1", stored(values.astype(np.float64))),
                fine("an HDF5 enum", stored_as_enum(values))]
    defects += [bad(f"{value} at row {row}", stored(with_value(values, row, value)))
                for value in (2.0, 0.5, -1.0, np.nan)]
  if key == "actions":
    defects.append(bad(f"1.5 at row {row}", stored(with_value(values, row, 1.5))))
  return defects


def truncated(path: pathlib.Path, rng: np.random.Generator) -> None:
  content = path.read_bytes()
  path.write_bytes(content[: int(len(content) * rng.uniform(0.05, 0.95))])


def replaced_by_text(path: pathlib.Path, rng: np.random.Generator) -> None:
  path.write_text("observations,actions,rewards\n0.1,0.2,0.3\n")


def replaced_by_noise(path: pathlib.Path, rng: np.random.Generator) -> None:
  path.write_bytes(rng.bytes(int(rng.integers(0, 4096))))


def file_defects() -> list[Defect]:
  return [Defect(corrupt.__name__, None, True, corrupt=corrupt)
          for corrupt in (truncated, replaced_by_text, replaced_by_noise)]


# Reference returns no normalised score can be computed from (ref_max_score is 30).
BAD_REFERENCE_SCORES = {"text": "abc", "numeric text": "12.5", "NaN": float("nan"),
                        "Inf": float("inf"), "an array": [1.0, 2.0], "a boolean": True,
                        "equal to ref_max_score": 30.0}


# ---------------------------------------------------------------------------
# Entry points: the library call and the command, each judged the same way
# ---------------------------------------------------------------------------

def load_outcome(spec: str) -> Optional[str]:
  """None when the dataset loads, else the InputError's message; anything else propagates."""
  try:
    dataset = data.load_dataset(spec, progress=False)
  except InputError as error:
    return str(error)
  assert dataset.transitions.size > 0
  assert np.isfinite(np.asarray(dataset.transitions.rewards)).all()
  return None


def run_data_command_in_process(spec: str) -> tuple[int, str, str]:
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["bracplus_jax.data"])
  flags.FLAGS.clip_actions, flags.FLAGS.env = False, None
  stdout, stderr = io.StringIO(), io.StringIO()
  code = 0
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
      data_command.main(["bracplus_jax.data", spec])
    except SystemExit as exit:
      code = exit.code
  return code, stdout.getvalue(), stderr.getvalue()


def assert_judged_right(spec: str, defects: list[Defect], names: list[str]) -> Optional[str]:
  """Harmless defects load, harmful ones stop with one line naming the file (and key).

  Returns the InputError's message, None where the dataset loaded.
  """
  context = f"{spec} with {[defect.name for defect in defects]}"
  message = load_outcome(spec)
  harmful = [defect for defect in defects if defect.harmful]
  if harmful:
    assert message is not None, f"{context} loaded"
  elif all(defect.harmful is False for defect in defects):
    assert message is None, f"{context}: {message}"
  code, stdout, stderr = run_data_command_in_process(spec)
  if message is None:
    assert code == 0 and not stderr and "transitions" in stdout, f"{context}: {stderr}"
    return None
  assert "\n" not in message and "\r" not in message, f"{context}: {message}"
  assert any(name in message for name in names), f"{context}: {message}"
  others_harmless = all(defect.harmful is False for defect in defects if defect not in harmful)
  if len(harmful) == 1 and harmful[0].names_key and others_harmless:
    assert harmful[0].key.split("/")[-1] in message, f"{context}: {message}"
  assert code == 2 and stderr == f"error: {message}\n", f"{context}: {stderr}"
  return message


# Which defects an example gets, drawn before the file itself: drawn last, they come out
# as the pool's first entries far more often than the others. Every defect is also
# tried alone, once, by the test_every_* sweeps.
DEFECT_PICKS = st.lists(st.sampled_from(range(4096)), min_size=1, max_size=2)


def distinct_defects(picks: list[int], pool: list[Defect]) -> list[Defect]:
  """The picked defects from `pool`, on different keys so that none undoes another."""
  defects, touched = [], set()
  for defect in (pool[pick % len(pool)] for pick in picks):
    keys = {defect.key} - {None} | set(defect.changes) | set(defect.json_changes)
    if not keys & touched:
      defects.append(defect)
      touched |= keys
  return defects


# ---------------------------------------------------------------------------
# D4RL's layout: hdf5: and d4rl: specs, and the collector's files
# ---------------------------------------------------------------------------

ROW_KINDS = {"observations": "vectors", "actions": "vectors", "next_observations": "vectors",
             "rewards": "numbers", "terminals": "flags", "timeouts": "flags"}
REQUIRED = ("observations", "actions", "rewards", "terminals")


@st.composite
def d4rl_rows(draw) -> dict[str, np.ndarray]:
  lengths = draw(st.lists(st.integers(2, 5), min_size=3, max_size=3))
  ends = draw(st.lists(st.sampled_from(["terminal", "timeout", "cut"]), min_size=3, max_size=3))
  rows = episodes_dataset(lengths, ends, obs_dim=draw(st.integers(1, 4)),
                          act_dim=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**16)))
  if draw(st.booleans()):
    rows["next_observations"] = rows["observations"] + 0.5
  return rows


def d4rl_defects(rows: dict, row: int, layout: str) -> list[Defect]:
  defects = []
  for key, values in rows.items():
    defects += key_defects(key, values, ROW_KINDS[key], row)
    harmful = key in REQUIRED or (key == "timeouts" and layout != "d4rl")
    defects.append(Defect(f"{key}: missing", key, harmful, harmful, {key: REMOVED}))
  defects += [
      Defect("an extra dataset", None, False, changes={"notes": stored(np.array([b"hi"]))}),
      Defect("an extra group", None, False, changes={"infos/qvel": stored(np.zeros((3, 2)))}),
      Defect("no rows at all", None, True, changes={
          key: stored(values[:0]) for key, values in rows.items()})]
  if "next_observations" in rows and rows["observations"].shape[1] > 1:
    defects.append(Defect(
        "next_observations: narrower than observations", "next_observations", True, True,
        {"next_observations": stored(rows["next_observations"][:, 1:])}))
  if layout == "collector":
    defects += collector_metadata_defects()
  return defects + file_defects()


def collector_metadata_defects() -> list[Defect]:
  def metadata_value(value):
    return stored(np.array(value) if isinstance(value, list) else value)

  env_id, reference = "metadata/env_id", "metadata/ref_min_score"
  return [
      *(Defect(f"{reference}: {name}", reference, True, True, {reference: metadata_value(value)})
        for name, value in BAD_REFERENCE_SCORES.items()),
      Defect(f"{reference}: missing", reference, False, changes={reference: REMOVED}),
      Defect("env_id: a number", env_id, True, True, {env_id: stored(3)}),
      Defect("env_id: an array", env_id, True, True, {env_id: stored(np.array([b"a", b"b"]))}),
      Defect("env_id: not UTF-8", env_id, False,
             changes={env_id: stored(np.bytes_(b"Hop\xffper"))}),
      Defect("metadata: a dataset", "metadata", True, True, {"metadata": stored(np.arange(3))}),
      Defect("metadata: unreadable value", "metadata/seed", True, True,
             {"metadata/seed": stored_outside_the_file(np.zeros(4))}),
      Defect("metadata: extra values", None, False, changes={
          "metadata/notes/long": stored(np.arange(5)), "metadata/empty": stored(h5py.Empty("f"))}),
  ]


def apply_defects(path: pathlib.Path, defects: list[Defect], rng: np.random.Generator) -> None:
  """Each defect's changes to the HDF5 file at `path`, then its corruption of the file."""
  with h5py.File(path, "a") as file:
    for key, write in (item for defect in defects for item in defect.changes.items()):
      if key in file:
        del file[key]
      if write is not None:
        write(file, key)
  for defect in defects:
    if defect.corrupt:
      defect.corrupt(path, rng)


def write_d4rl_layout(folder: pathlib.Path, layout: str, rows: dict,
                      patch: pytest.MonkeyPatch) -> tuple[str, pathlib.Path]:
  """The spec and the path of a well-formed file of `layout`: hdf5, d4rl or collector."""
  if layout == "d4rl":
    patch.setenv("BRACPLUS_DATA", str(folder / "cache"))
    path = d4rl_source.local_path(D4RL_NAME)
    path.parent.mkdir(parents=True)
    write_d4rl_file(path, **rows)
    return f"d4rl:{D4RL_NAME}", path
  path = folder / "data.hdf5"
  if layout == "collector":
    arrays = {**rows, "infos/qpos": np.zeros((len(rows["rewards"]), 2))}
    write_dataset(str(path), arrays, COLLECTOR_METADATA)
  else:
    write_d4rl_file(path, **rows)
  return f"hdf5:{path}", path


@SETTINGS
@hypothesis.given(draw_from=st.data())
def test_d4rl_layout_files_with_defects(draw_from):
  draw = draw_from.draw
  picks = draw(DEFECT_PICKS)
  layout = draw(st.sampled_from(["hdf5", "d4rl", "collector"]))
  rows = draw(d4rl_rows())
  row = draw(st.integers(0, len(rows["rewards"]) - 1))
  defects = distinct_defects(picks, d4rl_defects(rows, row, layout))
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
    spec, path = write_d4rl_layout(pathlib.Path(folder), layout, rows, patch)
    apply_defects(path, defects, rng)
    message = assert_judged_right(spec, defects, [str(path)])
  hypothesis.event("loads" if message is None else "InputError")


@pytest.mark.parametrize("layout", ["hdf5", "d4rl", "collector"])
def test_every_d4rl_layout_defect_alone(layout, tmp_path, monkeypatch):
  rows = episodes_dataset([4, 3, 5], ["terminal", "timeout", "cut"], obs_dim=3, act_dim=2)
  rows["next_observations"] = rows["observations"] + 0.5
  rng = np.random.default_rng(0)
  for index, defect in enumerate(d4rl_defects(rows, row=5, layout=layout)):
    folder = tmp_path / str(index)
    folder.mkdir()
    spec, path = write_d4rl_layout(folder, layout, rows, monkeypatch)
    apply_defects(path, [defect], rng)
    assert_judged_right(spec, [defect], [str(path)])


# ---------------------------------------------------------------------------
# Minari datasets
# ---------------------------------------------------------------------------

MINARI_KINDS = {"observations": "vectors", "actions": "vectors", "rewards": "numbers",
                "terminations": "flags", "truncations": "flags"}
MINARI_EPISODES = (4, 3, 5)


def _minari_buffer(steps: int, terminated: bool, rng) -> EpisodeBuffer:
  return EpisodeBuffer(
      observations=list(rng.normal(size=(steps + 1, 3)).astype(np.float32)),
      actions=list(rng.uniform(-1, 1, size=(steps, 2)).astype(np.float32)),
      rewards=list(rng.normal(size=steps)),
      terminations=[False] * (steps - 1) + [terminated],
      truncations=[False] * (steps - 1) + [not terminated])


@pytest.fixture(scope="module")
def minari_template(tmp_path_factory) -> pathlib.Path:
  """A well-formed Minari root holding MINARI_ID, with reference scores."""
  root = tmp_path_factory.mktemp("minari-template")
  rng = np.random.default_rng(0)
  buffers = [_minari_buffer(steps, index % 2 == 0, rng)
             for index, steps in enumerate(MINARI_EPISODES)]
  with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    warnings.simplefilter("ignore", UserWarning)  # made without an environment
    minari.create_dataset_from_buffers(
        MINARI_ID, buffers, observation_space=gym.spaces.Box(-10, 10, (3,), np.float32),
        action_space=gym.spaces.Box(-1, 1, (2,), np.float32), algorithm_name="random",
        author="bracplus-jax tests", author_email="tests@example.org",
        code_permalink="https://example.org/bracplus-jax", description="malformed-file tests")
  metadata_path = root / MINARI_ID / "data" / "metadata.json"
  metadata = json.loads(metadata_path.read_text())
  metadata.update(ref_min_score=-10.0, ref_max_score=30.0)
  metadata_path.write_text(json.dumps(metadata))
  return root


def minari_episode_values(template: pathlib.Path, episode: int) -> dict[str, np.ndarray]:
  with h5py.File(template / MINARI_ID / "data" / "main_data.hdf5", "r") as file:
    return {key: file[f"episode_{episode}/{key}"][()] for key in MINARI_KINDS}


def minari_defects(values: dict, episode: int, row: int) -> list[Defect]:
  group = f"episode_{episode}"
  defects = []
  for key, kind in MINARI_KINDS.items():
    defects += key_defects(f"{group}/{key}", values[key], kind, min(row, len(values[key]) - 1),
                           reader_names_structure=False)
    path = f"{group}/{key}"
    defects.append(Defect(f"{key}: missing", path, True, False, {path: REMOVED}))
  empty = {f"{group}/{key}": stored(values[key][:1] if key == "observations" else values[key][:0])
           for key in MINARI_KINDS}
  reference = "ref_min_score"
  defects += [
      Defect(f"{group}: no steps", None, None, changes=empty),
      *(Defect(f"{reference}: {name}", reference, True, True, json_changes={reference: value})
        for name, value in BAD_REFERENCE_SCORES.items()),
      Defect(f"{reference}: missing", reference, False, json_changes={reference: REMOVED}),
      Defect("metadata.json: an extra value", None, False, json_changes={"notes": "by hand"}),
      Defect("metadata.json: env_spec not JSON", None, None, json_changes={"env_spec": "{not"}),
      Defect("metadata.json: dataset_size text", None, None, json_changes={"dataset_size": "big"}),
      Defect("metadata.json: not JSON", None, True, corrupt=metadata_json_replaced_by_text),
  ]
  return defects + file_defects()


def write_minari_dataset(root: pathlib.Path, template: pathlib.Path, defects: list[Defect],
                         rng: np.random.Generator) -> pathlib.Path:
  shutil.copytree(template, root, dirs_exist_ok=True)
  data_dir = root / MINARI_ID / "data"
  metadata = json.loads((data_dir / "metadata.json").read_text())
  for key, value in (item for defect in defects for item in defect.json_changes.items()):
    metadata[key] = value
    if value is REMOVED:
      del metadata[key]
  (data_dir / "metadata.json").write_text(json.dumps(metadata))
  apply_defects(data_dir / "main_data.hdf5", defects, rng)
  return data_dir


def metadata_json_replaced_by_text(main_data: pathlib.Path, rng: np.random.Generator) -> None:
  replaced_by_text(main_data.parent / "metadata.json", rng)


@SETTINGS
@hypothesis.given(draw_from=st.data())
def test_minari_datasets_with_defects(minari_template, draw_from):
  draw = draw_from.draw
  picks = draw(DEFECT_PICKS)
  episode = draw(st.integers(0, len(MINARI_EPISODES) - 1))
  row = draw(st.integers(0, MINARI_EPISODES[episode] - 1))
  values = minari_episode_values(minari_template, episode)
  defects = distinct_defects(picks, minari_defects(values, episode, row))
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
    patch.setenv("MINARI_DATASETS_PATH", folder)
    patch.setattr(minari.storage.hosting, "get_cloud_storage", _no_network)
    data_dir = write_minari_dataset(pathlib.Path(folder), minari_template, defects, rng)
    message = assert_judged_right(f"minari:{MINARI_ID}", defects, [MINARI_ID, str(data_dir)])
  hypothesis.event("loads" if message is None else "InputError")


def test_every_minari_defect_alone(minari_template, tmp_path, monkeypatch):
  monkeypatch.setattr(minari.storage.hosting, "get_cloud_storage", _no_network)
  rng = np.random.default_rng(0)
  values = minari_episode_values(minari_template, 1)
  for index, defect in enumerate(minari_defects(values, episode=1, row=1)):
    root = tmp_path / str(index)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    data_dir = write_minari_dataset(root, minari_template, [defect], rng)
    assert_judged_right(f"minari:{MINARI_ID}", [defect], [MINARI_ID, str(data_dir)])


def _no_network(remote_path=None, token=None):
  raise ConnectionError("no network in tests")


# ---------------------------------------------------------------------------
# The reported failure and its kin, through the real command in a subprocess
# ---------------------------------------------------------------------------

def test_string_rewards_are_one_line_from_the_command(tmp_path):
  rows = episodes_dataset([5, 5], ["terminal", "timeout"])
  rows["rewards"] = rows["rewards"].astype("S24")
  path = write_d4rl_file(tmp_path / "text_rewards.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, "'rewards'", "S24", "real numbers")


def test_a_text_reference_score_is_one_line_from_the_command(tmp_path):
  rows = episodes_dataset([5, 5], ["terminal", "timeout"])
  path = tmp_path / "collected.hdf5"
  write_dataset(str(path), rows, {**COLLECTOR_METADATA, "ref_min_score": "abc"})
  assert_one_line_error(run_data_command(f"hdf5:{path}"), str(path), "ref_min_score", "'abc'")


def test_text_rewards_in_a_minari_dataset_are_one_line_from_the_command(minari_template, tmp_path):
  rewards = minari_episode_values(minari_template, 0)["rewards"]
  defect = Defect("rewards: byte strings", "episode_0/rewards", True, True,
                  {"episode_0/rewards": stored(rewards.astype("S24"))})
  write_minari_dataset(tmp_path, minari_template, [defect], np.random.default_rng(0))
  result = run_data_command(f"minari:{MINARI_ID}", env={"MINARI_DATASETS_PATH": str(tmp_path)})
  assert_one_line_error(result, MINARI_ID, "episode 0", "'rewards'", "S24")
