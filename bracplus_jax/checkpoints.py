"""Orbax checkpoints of a run: the whole training state, the seeds' keys and how far it got.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a stopped run never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

# Orbax reports every save at INFO; a run's own progress bars say enough.
logging.getLogger("absl").setLevel(logging.WARNING)


def _key_data_template(keys):
  """The raw uint32 layout of typed PRNG keys, for concrete keys or shape templates alike."""
  return jax.eval_shape(jax.random.key_data, keys)


class Checkpointer:
  """Numbered checkpoints under `directory`; the number counts completed units of work."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, number: int, state: Any, keys: jax.Array, progress: dict[str, Any]) -> None:
    self._manager.save(number, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        keys=ocp.args.StandardSave({"keys": jax.random.key_data(keys)}),
        progress=ocp.args.JsonSave(progress)))
    self._manager.wait_until_finished()

  def restore(self, number: int, state_template: Any, keys_template: jax.Array):
    """(state, keys, progress); templates give the structure, dtypes and shardings."""
    restored = self._manager.restore(number, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state_template),
        keys=ocp.args.StandardRestore({"keys": _key_data_template(keys_template)}),
        progress=ocp.args.JsonRestore()))
    return restored["state"], jax.random.wrap_key_data(restored["keys"]["keys"]), restored["progress"]

  def close(self) -> None:
    self._manager.close()
