"""Files written whole or not at all (bracplus_jax.files), and every writer going through it."""

import json
import os
import pathlib
import stat

import pytest

from bracplus_jax import files

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_json_lands_whole_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / "summary.json"
  files.write_json_atomically(str(path), {"a": [1, 2]})
  assert json.loads(path.read_text()) == {"a": [1, 2]}
  files.write_json_atomically(str(path), {"a": 3})  # replaces
  assert json.loads(path.read_text()) == {"a": 3}
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_writer_stopped_halfway_leaves_the_old_file(tmp_path):
  path = tmp_path / "config.json"
  path.write_text('{"old": true}')
  with pytest.raises(KeyboardInterrupt):
    with files.atomic_write(str(path)) as file:
      file.write('{"new": ')
      raise KeyboardInterrupt
  assert path.read_text() == '{"old": true}'
  assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_the_file_and_its_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
  synced, replaced = [], []
  real_fsync, real_replace = os.fsync, os.replace

  def fsync(descriptor):
    synced.append(os.path.realpath(f"/proc/self/fd/{descriptor}") if os.path.isdir("/proc/self/fd") else descriptor)
    real_fsync(descriptor)

  def replace(source, target):
    replaced.append((len(synced), target))
    real_replace(source, target)

  monkeypatch.setattr(os, "fsync", fsync)
  monkeypatch.setattr(os, "replace", replace)
  path = tmp_path / "data.bin"
  files.write_atomically(str(path), b"\x00\x01")
  assert path.read_bytes() == b"\x00\x01"
  (synced_before, target), = replaced
  assert target == str(path) and synced_before >= 1  # the content, before the rename
  assert len(synced) > synced_before  # the folder, after it
  if os.path.isdir("/proc/self/fd"):
    assert synced[-1] == os.path.realpath(tmp_path)


def test_a_path_for_any_writer_and_no_overwrite(tmp_path):
  path = tmp_path / "rows.npz"
  with files.atomic_path(str(path), suffix=".npz") as partial:
    assert partial.endswith(".npz") and os.path.dirname(partial) == str(tmp_path)
    assert not os.path.exists(partial)  # the writer creates it
    pathlib.Path(partial).write_bytes(b"rows")
  assert path.read_bytes() == b"rows"
  with pytest.raises(FileExistsError):
    with files.atomic_path(str(path), overwrite=False) as partial:
      pathlib.Path(partial).write_bytes(b"other")
  assert path.read_bytes() == b"rows"
  assert [p.name for p in tmp_path.iterdir()] == ["rows.npz"]


def test_a_new_file_gets_the_usual_permissions(tmp_path):
  umask = os.umask(0o022)
  try:
    path = tmp_path / "f.json"
    files.write_json_atomically(str(path), {})
  finally:
    os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_text_must_be_written_whole():
  with pytest.raises(ValueError, match="whole file"):
    with files.atomic_write("x", "a"):
      pass


def test_every_rename_into_place_is_the_helper_s():
  """No module renames a file into place by itself: all go through bracplus_jax.files."""
  offenders = []
  for path in sorted((ROOT / "bracplus_jax").rglob("*.py")):
    if path.name == "files.py":
      continue
    text = path.read_text()
    for needle in ("os.replace(", "os.rename(", "shutil.move("):
      if needle in text:
        offenders.append(f"{path.relative_to(ROOT)}: {needle}")
  assert not offenders, offenders
