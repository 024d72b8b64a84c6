"""What a run records: a JSONL line per phase or epoch and seed, and the same to W&B.

The local files are written in every W&B mode, so a run is never only in the cloud.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import ml_collections
import numpy as np

WANDB_PROJECT = "bracplus-jax"


def wandb_mode(requested: str) -> str:
  """'auto' is online when W&B has a login here (key in the environment or netrc), else disabled."""
  if requested != "auto":
    return requested
  if os.environ.get("WANDB_API_KEY"):
    return "online"
  try:
    import netrc
    hosts = netrc.netrc().hosts
  except (FileNotFoundError, netrc.NetrcParseError, OSError):
    return "disabled"
  return "online" if any("wandb" in host for host in hosts) else "disabled"


def _plain(value: Any) -> Any:
  """JSON-ready: numpy scalars to floats, NaN and Inf to strings JSON can hold."""
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class RunLog:
  """metrics.jsonl in the run directory, mirrored to a W&B run unless W&B is disabled."""

  def __init__(self, run_dir: str, config: ml_collections.ConfigDict, task: str, resume: bool):
    self.path = os.path.join(run_dir, "metrics.jsonl")
    self.num_seeds = config.num_seeds
    self._wandb = None
    mode = wandb_mode(config.wandb.mode)
    if mode != "disabled":
      import wandb
      self._wandb = wandb.init(
          project=config.wandb.project or WANDB_PROJECT,
          entity=config.wandb.entity or None,
          group=config.wandb.group or task,
          name=config.wandb.name or f"{task}-seeds{config.seed}-{config.seed + config.num_seeds - 1}",
          config=config.to_dict(), dir=run_dir, mode=mode,
          id=config.wandb.run_id or None, resume="allow" if resume else None)

  def write(self, record: dict[str, Any]) -> None:
    with open(self.path, "a") as file:
      file.write(json.dumps({key: _plain(value) for key, value in record.items()}) + "\n")

  @property
  def lines(self) -> int:
    """Lines metrics.jsonl holds now."""
    if not os.path.exists(self.path):
      return 0
    with open(self.path) as file:
      return sum(1 for _ in file)

  def rewind(self, lines: int) -> None:
    """Keeps metrics.jsonl's first `lines` lines, for a run resumed from a checkpoint taken
    when it had that many; the later ones (which the resumed run logs again) move to
    metrics.superseded.jsonl rather than being lost."""
    if self.lines <= lines:
      return
    with open(self.path) as file:
      records = file.readlines()
    with open(os.path.join(os.path.dirname(self.path), "metrics.superseded.jsonl"), "a") as file:
      file.writelines(records[lines:])
    with open(self.path, "w") as file:
      file.writelines(records[:lines])

  def log(self, phase: str, step: int, metrics: dict[str, np.ndarray], epoch: Optional[int] = None):
    """One JSONL line per seed; W&B gets per-seed curves and their mean over seeds."""
    for seed_index in range(self.num_seeds):
      record = {"phase": phase, "step": step, "seed_index": seed_index}
      if epoch is not None:
        record["epoch"] = epoch
      record.update({name: np.asarray(values)[seed_index] for name, values in metrics.items()})
      self.write(record)
    if self._wandb is not None:
      logged = {}
      for name, values in metrics.items():
        values = np.asarray(values, dtype=np.float64)
        logged[f"{phase}/{name}/mean"] = float(np.mean(values))
        logged.update({f"{phase}/{name}/seed_{i}": float(v) for i, v in enumerate(values)})
      self._wandb.log(logged, step=step)

  def finish(self, summary: dict[str, Any]) -> None:
    if self._wandb is not None:
      self._wandb.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
      self._wandb.finish()
