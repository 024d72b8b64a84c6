"""What the studies read back from run directories: a run's files as one `Run`, metrics per
epoch and seed (with the start-up phase's value as epoch 0, or over the last third), a run's
final results from its summary, and the names of the files one study leaves for another."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, Optional

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


class Run(NamedTuple):
  label: str
  run_dir: str
  records: list[dict[str, Any]]  # metrics.jsonl
  summary: Optional[dict[str, Any]]  # summary.json; None while a run has not finished
  diagnostics: Optional[dict[str, np.ndarray]]  # diagnostics.npz


def read_json(path: str) -> Any:
  try:
    with open(path) as file:
      return json.load(file)
  except (OSError, json.JSONDecodeError) as error:
    raise InputError(f"{path}: cannot be read ({error})") from error


def read_run(label: str, run_dir: str) -> Run:
  records = read_records(run_dir)
  summary_path = os.path.join(run_dir, "summary.json")
  summary = read_json(summary_path) if os.path.isfile(summary_path) else None
  diagnostics_path = os.path.join(run_dir, DIAGNOSTICS_FILE)
  diagnostics = None
  if os.path.isfile(diagnostics_path):
    with np.load(diagnostics_path) as arrays:
      diagnostics = {name: arrays[name] for name in arrays.files}
  return Run(label, run_dir, records, summary, diagnostics)


def with_start(records: list[dict[str, Any]], metric: str, start_phase: str) -> tuple[np.ndarray, np.ndarray]:
  """A metric per epoch and seed, with its value after `start_phase` as epoch 0 where logged."""
  epochs, values = per_epoch(records, "epoch", metric)
  initial = [r for r in records if r["phase"] == start_phase and metric in r]
  if initial and values.size:
    start = np.full((1, values.shape[1]), np.nan)
    for r in initial:
      start[0, r["seed_index"]] = float(r[metric])
    epochs, values = np.concatenate([[0], epochs]), np.concatenate([start, values])
  return epochs, values


def in_last_third(steps: np.ndarray) -> np.ndarray:
  """Which of the epochs (or updates) [E] lie in the last third of training: a mask [E]."""
  return steps > 2 * steps.max() / 3


def last_third(records: list[dict[str, Any]], metric: str) -> np.ndarray:
  """Each seed's mean of an epoch metric over the last third of the epochs [seeds]."""
  epochs, values = per_epoch(records, "epoch", metric)
  return np.nanmean(values[in_last_third(epochs)], axis=0) if epochs.size else np.array([])
