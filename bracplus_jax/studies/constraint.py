"""The constraint's per-epoch series of finished (or stopped) runs, and the multiplier's targets.

  python -m bracplus_jax.studies.constraint --out=docs/results/multiplier_hopper-v5.json \
      --run=mixed/default_100k:runs/mixed_100k --run=mixed/bc_100k:runs/mixed_bc_100k ...

Each `--run=label:run_dir` adds, per seed and epoch: KL / eps_KL over the dataset, the share
of states above 1.2 eps_KL, alpha(s) over the states above eps_KL and the rest, the dual
step's gains or its row offsets' spread, the critic's Monte-Carlo correlation, and the evaluations' normalised scores and
Q(s0) over-estimation; then each seed's mean over the last third of its epochs. The run's
config, data checksum, library versions and wall time come from its run directory. A label's
first part names the dataset (mixed/..., medium_expert/...), which groups BC with BRAC+.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from bracplus_jax.errors import InputError
from bracplus_jax.files import write_atomically
from bracplus_jax.studies.run_files import in_last_third, per_epoch, read_json, read_records

EPOCH_METRICS = {
    "kl_over_eps": "dataset_kl_over_threshold",
    "share_above_1_2_eps": "dataset_kl_violation_fraction_1_2x",
    "alpha_above_eps": "dataset_alpha_above_threshold",
    "alpha_below_eps": "dataset_alpha_below_threshold",
    "alpha_gain_mean": "alpha_gain_mean",
    "alpha_gain_max": "alpha_gain_max",
    "alpha_row_offset_std": "alpha_row_offset_std",
    "q_mc_correlation": "q_mc_correlation",
    "beta": "beta",
}
EVAL_METRICS = {"score": "normalized_score", "q_overestimation": "q_overestimation"}


def _rounded(values: np.ndarray) -> list:
  return [[None if np.isnan(v) else round(float(v), 5) for v in row] for row in values]


def run_series(run_dir: str) -> dict[str, Any]:
  """{metric: {"epochs": [E], "values": [E][seeds]}} of one run directory."""
  records = read_records(run_dir)
  series = {}
  for name, metric in EPOCH_METRICS.items():
    epochs, values = per_epoch(records, "epoch", metric)
    if epochs.size:
      series[name] = {"epochs": epochs.tolist(), "values": _rounded(values)}
  for name, metric in EVAL_METRICS.items():
    epochs, values = per_epoch(records, "eval", metric)
    if epochs.size:
      series[name] = {"epochs": epochs.tolist(), "values": _rounded(values)}
  return series


def last_third_means(series: dict[str, Any]) -> dict[str, list[float]]:
  """Each seed's mean of every series over the last third of its epochs (epoch 0 aside)."""
  means = {}
  for name, entry in series.items():
    epochs, values = np.asarray(entry["epochs"]), np.asarray(entry["values"], np.float64)
    mask = in_last_third(epochs) & (epochs > 0)
    if mask.any():
      means[name] = np.round(np.nanmean(values[mask], axis=0), 4).tolist()
  return means


def describe_run(label: str, run_dir: str) -> dict[str, Any]:
  config = read_json(os.path.join(run_dir, "config.json"))
  summary_path = os.path.join(run_dir, "summary.json")
  summary = read_json(summary_path) if os.path.isfile(summary_path) else {}
  series = run_series(run_dir)
  algo = config.get("algo", {})
  return {
      "label": label,
      "method": config.get("method"),
      "dataset": config.get("dataset"),
      "updates_per_seed": config.get("epochs", 0) * config.get("steps_per_epoch", 0),
      "seeds": config.get("num_seeds"),
      "dual": {name: algo.get(name) for name in (
          "alpha_dual_fit", "alpha_dual_gain", "alpha_dual_violation", "alpha_dual_max_violation",
          "alpha_dual_state_gain", "alpha_dual_step", "alpha_paper_optimizer", "alpha_lr")},
      "finished": bool(summary),
      "dataset_checksum": summary.get("dataset_checksum"),
      "versions": summary.get("versions"),
      "phase_seconds": summary.get("phase_seconds"),
      "epochs_logged": len(series.get("kl_over_eps", {}).get("epochs", [])),
      "last_third": last_third_means(series),
      "series": series,
  }


def main(argv: list[str]) -> None:
  runs, out = [], None
  for arg in argv:
    if arg.startswith("--run="):
      label, sep, run_dir = arg[len("--run="):].partition(":")
      if not sep or not os.path.isdir(run_dir):
        raise InputError(f"{arg}: expected --run=<label>:<an existing run directory>")
      runs.append((label, run_dir))
    elif arg.startswith("--out="):
      out = arg[len("--out="):]
    else:
      raise InputError(f"unknown argument {arg!r}; expected --run=<label>:<run dir> and --out=<json>")
  if not runs or out is None:
    raise InputError("expected at least one --run=<label>:<run dir> and --out=<json>")
  result = {"what": __doc__.strip().splitlines()[0], "runs": {label: describe_run(label, d) for label, d in runs}}
  write_atomically(out, json.dumps(result, indent=1))
  for label, run in result["runs"].items():
    tail = run["last_third"]
    print(f"{label}: {run['epochs_logged']} epochs; last third: " + ", ".join(
        f"{name} {np.round(values, 3).tolist()}" for name, values in tail.items()))


if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except InputError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
