"""What a run records: a JSONL line per phase or epoch and seed, and the same to W&B.

The local files are written in every W&B mode, so a run is never only in the cloud.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any, Optional

import ml_collections
import numpy as np

from bracplus_jax import extras, sweep
from bracplus_jax.files import atomic_write, write_json_atomically

WANDB_PROJECT = "bracplus-jax"
WANDB_RUNS_FILE = "wandb_runs.json"  # the W&B run ids of a run directory, one per sweep point


def wandb_mode(requested: str) -> str:
  """'auto' is online when W&B has a login here (key in the environment or netrc), else disabled."""
  if requested != "auto":
    return requested
  if not extras.is_installed("wandb"):  # W&B is an extra: without it, 'auto' logs locally only
    return "disabled"
  if os.environ.get("WANDB_API_KEY"):
    return "online"
  try:
    import netrc
    hosts = netrc.netrc().hosts
  except (FileNotFoundError, netrc.NetrcParseError, OSError):
    return "disabled"
  return "online" if any("wandb" in host for host in hosts) else "disabled"


def require_wandb(requested: str) -> None:
  """InputError naming the pip command when the mode logs to W&B and W&B is not installed."""
  if wandb_mode(requested) != "disabled":
    extras.require("wandb", f"config.wandb.mode = '{requested}'")


def _plain(value: Any) -> Any:
  """JSON-ready: numpy scalars to floats, NaN and Inf to strings JSON can hold."""
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class RunLog:
  """metrics.jsonl in the run directory, mirrored to W&B unless W&B is disabled.

  A line per run: `seed_index` within its sweep point and, in a sweep, `point`
  and the point's values (`sweep/algo.kl_margin`, ...). W&B gets one run per
  point, all in one group, each with its point's config, so that W&B's grouping
  and parallel-coordinates views compare the points directly. Their ids are kept
  in the run directory (wandb_runs.json), so a resumed run continues them.
  """

  def __init__(self, run_dir: str, config: ml_collections.ConfigDict, task: str, resume: bool):
    self.path = os.path.join(run_dir, "metrics.jsonl")
    self.num_seeds = config.num_seeds
    self.points = sweep.grid(config)
    self.is_sweep = sweep.is_sweep(config)
    self._lines = 0  # lines metrics.jsonl holds: counted once here, then as they are written
    if os.path.exists(self.path):
      with open(self.path) as file:
        self._lines = sum(1 for _ in file)
    self._wandb = []
    mode = wandb_mode(config.wandb.mode)
    if mode == "disabled":
      return
    wandb = extras.import_optional("wandb", f"config.wandb.mode = '{mode}'")
    ids_path = os.path.join(run_dir, WANDB_RUNS_FILE)
    ids = []
    if os.path.isfile(ids_path):
      with open(ids_path) as file:
        ids = json.load(file)
    if not ids:
      ids = ([config.wandb.run_id] if config.wandb.run_id and not self.is_sweep else
             [uuid.uuid4().hex[:12] for _ in self.points])
      write_json_atomically(ids_path, ids)
    seeds = f"seeds{config.seed}-{config.seed + config.num_seeds - 1}"
    for point, run_id in zip(self.points, ids):
      label = sweep.point_label(point)
      name = config.wandb.name or f"{task}-{seeds}"
      self._wandb.append(wandb.init(
          project=config.wandb.project or WANDB_PROJECT,
          entity=config.wandb.entity or None,
          group=config.wandb.group or task,
          name=f"{name}-{label}" if label else name,
          # The point's own config: W&B shows algo.kl_margin etc. as columns to group by.
          config=sweep.point_config(config, point).to_dict() | (
              {"sweep_point": len(self._wandb)} if self.is_sweep else {}),
          dir=run_dir, mode=mode, id=run_id, resume="allow",
          reinit="create_new" if self.is_sweep else "default"))

  def write(self, record: dict[str, Any]) -> None:
    with open(self.path, "a") as file:
      file.write(json.dumps({key: _plain(value) for key, value in record.items()}) + "\n")
    self._lines += 1

  def log(self, phase: str, step: int, metrics: dict[str, np.ndarray], epoch: Optional[int] = None):
    """One JSONL line per run; each point's W&B run gets per-seed curves and their mean."""
    for run_index in range(len(self.points) * self.num_seeds):
      point, seed_index = divmod(run_index, self.num_seeds)
      record = {"phase": phase, "step": step, "seed_index": seed_index}
      if self.is_sweep:
        record["point"] = point
        record.update({f"sweep/{path}": value for path, value in self.points[point].items()})
      if epoch is not None:
        record["epoch"] = epoch
      record.update({name: np.asarray(values)[run_index] for name, values in metrics.items()})
      self.write(record)
    for point, run in enumerate(self._wandb):
      logged = {}
      for name, values in metrics.items():
        values = np.asarray(values, dtype=np.float64)[sweep.point_runs(point, self.num_seeds)]
        logged[f"{phase}/{name}/mean"] = float(np.mean(values))
        logged.update({f"{phase}/{name}/seed_{i}": float(v) for i, v in enumerate(values)})
      run.log(logged, step=step)

  def finish(self, summaries: list[dict[str, Any]]) -> None:
    """Each point's W&B run gets its summary (one per point, in order)."""
    for run, summary in zip(self._wandb, summaries):
      run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
      run.finish()

  @property
  def lines(self) -> int:
    """Lines metrics.jsonl holds now."""
    return self._lines

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
    with atomic_write(self.path) as file:
      file.writelines(records[:lines])
    self._lines = lines
