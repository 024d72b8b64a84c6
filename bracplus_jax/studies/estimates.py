"""Aggregate scores with 95% stratified-bootstrap confidence intervals (rliable, Agarwal et al.
2021): what the evidence of one environment and the combination of several compute alike.

Scores are rliable's matrix [runs, tasks]; a vector of per-seed scores is one task. The
bootstrap draws runs again within each task."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from bracplus_jax import extras

BOOTSTRAP_REPS = 2000


def score_matrix(scores: Any) -> np.ndarray:
  """Scores as rliable takes them, [runs, tasks]: per-seed scores [seeds] are one task."""
  matrix = np.asarray(scores, float)
  return matrix[:, None] if matrix.ndim == 1 else matrix


def interval_estimates(scores: dict[str, Any], seed: int = 0,
                       reps: Optional[int] = None) -> dict[str, dict[str, Any]]:
  """Mean and IQM of each method's scores ([seeds], or [runs, tasks]: over all runs x tasks)
  with 95% stratified-bootstrap CIs."""
  extras.require("evidence", "confidence intervals (rliable)")
  from rliable import library, metrics

  def aggregates(matrix):
    return np.array([metrics.aggregate_mean(matrix), metrics.aggregate_iqm(matrix)])

  np.random.seed(seed)  # rliable's bootstrap draws from numpy's global generator
  points, intervals = library.get_interval_estimates(
      {name: score_matrix(values) for name, values in scores.items()},
      aggregates, reps=reps or BOOTSTRAP_REPS)
  return {name: {"mean": float(points[name][0]), "iqm": float(points[name][1]),
                 "mean_ci": [float(v) for v in intervals[name][:, 0]],
                 "iqm_ci": [float(v) for v in intervals[name][:, 1]]} for name in scores}


def probability_of_improvement(better: Any, worse: Any, seed: int = 0,
                               reps: Optional[int] = None) -> dict[str, Any]:
  """P(X > Y) for a run X of one method and a run Y of the other on the same task (ties count
  half), averaged over tasks, with its 95% CI."""
  extras.require("evidence", "confidence intervals (rliable)")
  from rliable import library, metrics
  np.random.seed(seed)
  points, intervals = library.get_interval_estimates(
      {"p": (score_matrix(better), score_matrix(worse))},
      metrics.probability_of_improvement, reps=reps or BOOTSTRAP_REPS)
  return {"point": float(points["p"]), "ci": [float(v) for v in np.ravel(intervals["p"])]}
