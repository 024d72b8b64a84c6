"""What the studies write: Markdown tables and PNG figures, into files that never replace
another."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # drawing needs matplotlib (the `evidence` extra); the tables do not
  from matplotlib.figure import Figure

from bracplus_jax.errors import InputError
from bracplus_jax.files import atomic_write


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def mean_std(row: dict[str, Any], metric: str) -> str:
  """'mean +- std' of a result row's metric over seeds; 'n/a' where the task has none."""
  if f"{metric}_mean" not in row:
    return "n/a"
  return f"{row[f'{metric}_mean']:.1f} +- {row[f'{metric}_std']:.1f}"


def png_bytes(figure: Figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  return buffer.getvalue()


def write_new_file(path: str, content: bytes) -> None:
  """Creates path, whole or not at all (`files.atomic_write`): a file that appeared meanwhile
  is left as it was."""
  try:
    with atomic_write(path, "wb", overwrite=False) as file:
      file.write(content)
  except FileExistsError as error:
    raise InputError(f"--out: {path} appeared while drawing; it is left as it was") from error
  except OSError as error:
    raise InputError(f"--out: cannot write {path} ({error.strerror})") from error


def new_file_paths(out_dir: str, names) -> list[str]:
  """The paths of files about to be written into out_dir, which is made if missing.

  Checked before any drawing: an existing file is never overwritten.
  """
  paths = [os.path.join(out_dir, name) for name in names]
  for path in paths:
    if os.path.exists(path):
      raise InputError(f"--out: {path} exists; it is never overwritten, choose another folder")
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as error:
    raise InputError(f"--out: cannot create the folder {out_dir} ({error.strerror})") from error
  return paths
