"""Orbax checkpoints of a run: the whole training state, the seeds' keys and how far it got.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a stopped run never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from bracplus_jax.errors import InputError

# Orbax reports every save at INFO; a run's own progress bars say enough.
logging.getLogger("absl").setLevel(logging.WARNING)


def _key_data_template(keys):
  """The raw uint32 layout of typed PRNG keys, for concrete keys or shape templates alike."""
  return jax.eval_shape(jax.random.key_data, keys)


class Checkpointer:
  """Numbered checkpoints under `directory`, the newest with the highest number.

  Each holds the state, the seeds' keys and a JSON `progress` record that says
  where in the run it was taken: `completed_units`, and `unit_blocks_done`
  blocks into the next unit for a checkpoint taken inside a long phase.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest(self) -> Optional[int]:
    return self._manager.latest_step()

  def save_next(self, state: Any, keys: jax.Array, progress: dict[str, Any]) -> int:
    """Saves under the next number; returns it."""
    latest = self.latest()
    number = 1 if latest is None else latest + 1
    self.save(number, state, keys, progress)
    return number

  def progress(self, number: int) -> dict[str, Any]:
    """Only the progress record of checkpoint `number`: where the run was when it was taken."""
    restored = self._manager.restore(number, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))
    return restored["progress"]

  def restore_latest(self, template: Callable[[int], tuple[Any, jax.Array]]):
    """(state, keys, progress) of the newest checkpoint, or None if there is none;
    template(completed units) gives the (state, keys) structure to restore into."""
    latest = self.latest()
    if latest is None:
      return None
    progress = self.progress(latest)
    # Runs saved before checkpoints carried progress numbers named theirs by completed units.
    state_template, keys_template = template(progress.get("completed_units", latest))
    return self.restore(latest, state_template, keys_template)

  def saved_shape(self, number: int, *path: str) -> Optional[tuple[int, ...]]:
    """The shape of one array of checkpoint `number`'s state, by its keys (e.g. "alpha",
    "params", "rows", "log_alpha"), read from the metadata alone; None where there is none."""
    metadata = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(number), "state"))
    tree = metadata.item_metadata
    try:
      for key in path:
        tree = tree[key]
    except (KeyError, TypeError):
      return None
    return tuple(tree.shape)

  def save(self, number: int, state: Any, keys: jax.Array, progress: dict[str, Any]) -> None:
    self._manager.save(number, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        keys=ocp.args.StandardSave({"keys": jax.random.key_data(keys)}),
        progress=ocp.args.JsonSave(progress)))
    self._manager.wait_until_finished()

  def restore(self, number: int, state_template: Any, keys_template: jax.Array):
    """(state, keys, progress); templates give the structure, dtypes and shardings."""
    try:
      restored = self._restore(number, state_template, keys_template)
    except ValueError as error:
      if "tree structures do not match" not in str(error):
        raise
      raise InputError(
          f"{self.directory}/{number}: this checkpoint's state has another structure than this "
          "version's (it was written by an earlier version of bracplus-jax); resume or evaluate "
          "it with the version that wrote it") from error
    return restored["state"], jax.random.wrap_key_data(restored["keys"]["keys"]), restored["progress"]

  def _restore(self, number: int, state_template: Any, keys_template: jax.Array):
    return self._manager.restore(number, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state_template),
        keys=ocp.args.StandardRestore({"keys": _key_data_template(keys_template)}),
        progress=ocp.args.JsonRestore()))

  def close(self) -> None:
    self._manager.close()
