"""Files written whole or not at all: a run killed (or a machine that loses power) while a
file is written leaves the old file or none, never half of one.

Every writer of a file that a later run reads back (config.json, summary.json, datasets,
downloads, SAC checkpoints) goes through `atomic_write` (or `write_atomically` for bytes and
text): the content goes to a temporary file in the same folder, is flushed and fsynced, renamed
over the target in one step (os.replace), and the folder is fsynced so the rename survives too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import IO, Any, Iterator


def fsync_directory(directory: str) -> None:
  """Makes a rename in `directory` durable; a no-op where folders cannot be opened (Windows)."""
  try:
    descriptor = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(descriptor)
  except OSError:  # some file systems refuse fsync on a folder
    pass
  finally:
    os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", overwrite: bool = True) -> Iterator[str]:
  """A temporary path beside `path` (not created yet) to write by any means (h5py, np.savez,
  a download); on leaving the block it is fsynced and renamed to `path`. An error inside the block, or
  `overwrite=False` with `path` existing by then (FileExistsError), removes it and leaves
  `path` as it was. `suffix` ends the temporary name (np.savez wants '.npz')."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  # Unique to this process and call; the writer inside the block creates it.
  partial = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}")
  try:
    yield partial
    with open(partial, "rb+") as file:
      os.fsync(file.fileno())
    if not overwrite and os.path.exists(path):
      raise FileExistsError(f"{path} exists")
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  fsync_directory(directory)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", overwrite: bool = True, **open_kwargs) -> Iterator[IO]:
  """`open(path, mode)` whose content appears at `path` only once the block ends without an
  error: written to a temporary file in the same folder, flushed, fsynced, renamed into place."""
  if not mode.startswith("w"):
    raise ValueError(f"atomic_write writes a whole file: mode 'w' or 'wb', not {mode!r}")
  with atomic_path(path, overwrite=overwrite) as partial:
    with open(partial, mode, **open_kwargs) as file:
      yield file
      file.flush()
      os.fsync(file.fileno())


def write_atomically(path: str, content: bytes | str) -> None:
  """`content` (bytes, or text as UTF-8) as the whole of `path`, atomically."""
  with atomic_write(path, "wb") as file:
    file.write(content.encode() if isinstance(content, str) else content)


def write_json_atomically(path: str, value: Any, indent: int = 2, **dump_kwargs) -> None:
  """`value` as JSON (indented, ending in a newline) in `path`, atomically."""
  with atomic_write(path, "w") as file:
    json.dump(value, file, indent=indent, **dump_kwargs)
    file.write("\n")
