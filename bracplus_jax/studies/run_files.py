"""What the studies read back from run directories: metrics per epoch and seed, a run's final
results from its summary, and the names of the files one study leaves for another."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from bracplus_jax.errors import InputError

DIAGNOSTICS_FILE = "diagnostics.npz"  # a run's end-of-run quantities: ablate writes, report draws
ABLATION_RESULTS = "ablation.json"  # an ablation's variants and results: ablate writes, report reads


def read_records(run_dir: str) -> list[dict[str, Any]]:
  """The lines of the run's metrics.jsonl."""
  metrics_path = os.path.join(run_dir, "metrics.jsonl")
  try:
    with open(metrics_path) as file:
      return [json.loads(line) for line in file if line.strip()]
  except (OSError, json.JSONDecodeError) as error:
    raise InputError(f"{metrics_path}: cannot be read ({error})") from error


def per_epoch(records: list[dict[str, Any]], phase: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """(epochs [E], values [E, seeds]) of one metric of one phase; NaN where a seed lacks it."""
  rows = [r for r in records if r["phase"] == phase and metric in r]
  epochs = np.array(sorted({r["epoch"] for r in rows}), dtype=int)
  num_seeds = 1 + max((r["seed_index"] for r in rows), default=-1)
  values = np.full((len(epochs), num_seeds), np.nan)
  index = {epoch: i for i, epoch in enumerate(epochs)}
  for r in rows:
    values[index[r["epoch"]], r["seed_index"]] = float(r[metric])
  return epochs, values


def result_row(name: str, summary: dict[str, Any]) -> dict[str, Any]:
  """One run's final results over its seeds, from its summary.json."""
  row = {"variant": name, "seeds": len(summary["seeds"]), "run_dir": summary["run_dir"]}
  for metric in ("return", "normalized_score"):
    if metric in summary:
      row[f"{metric}_mean"] = summary[f"{metric}_mean"]
      row[f"{metric}_std"] = summary[f"{metric}_std"]
      row[metric] = summary[metric]
  return row
