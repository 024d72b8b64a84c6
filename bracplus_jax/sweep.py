"""Hyper-parameter sweeps as one compiled program.

`--config.sweep.algo.<field>="(v1, v2, ...)"` sweeps a numeric field that
changes no array shape and no code path. The grid (the cartesian product of
every swept field's values, in the order the fields are declared) times the
seeds is the leading axis of the training state, so every (point, seed) run
trains in the same vmapped, compiled steps: run r is point r // num_seeds,
seed `seed + r % num_seeds`. Each run's values live in its state (`hyper`);
learning rates reach the optimisers through `optax.inject_hyperparams`.

This module reads a config; `bracplus_jax.config` checks it, the sweep's fields included.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections
import numpy as np

# algo fields a sweep can carry, and what each needs to take effect (None: nothing).
SWEEPABLE = {
    "behavior_lr": None, "policy_init_lr": None, "policy_lr": None, "critic_lr": None,
    "entropy_lr": None,
    "alpha_lr": ("alpha", "global", "alpha(s) takes its own dual step (alpha_dual_step)"),
    "gp_lagrange_lr": ("gp_lagrange", True, "lambda is a constant unless gp_lagrange"),
    "gp_max_ood_grad_norm": ("gp_lagrange", True, "it is the target of the gp_lagrange multiplier"),
    "gp_lambda": ("gp_lagrange", False,
                  "with gp_lagrange, gp_lambda is the learned multiplier's floor, a static bound"),
    "kl_margin": ("divergence", "kl", "it is eps_KL's margin for divergence 'kl'"),
    "mmd_margin": ("divergence", "mmd", "it is eps_KL's margin for divergence 'mmd'"),
    "alpha_dual_step": ("alpha", "state", "it is the state-wise alpha(s)'s dual step"),
    "alpha_dual_state_gain": [("alpha", "state", "it scales the state-wise alpha(s)'s dual step"),
                              ("alpha_dual_gain", "constant", "it is the gain of every state when the gain is constant")],
    "alpha_dual_row_step": [("alpha", "state", "it is the state-wise alpha(s)'s row step"),
                            ("alpha_dual_gain", "rows", "it steps the row offsets of alpha_dual_gain 'rows'")],
    "alpha_init": None, "entropy_init": None, "gamma": None, "tau": None,
    "target_entropy": None,
    "target_entropy_offset": ("target_entropy", None, "it shifts the H0 rule used when target_entropy is None"),
}
# Why the other fields cannot be swept, by kind.
SHAPES = ("hidden_dims", "ensemble_size", "latent_dim", "samples", "batch_size")
STATIC = {"alpha_min": "alpha(s)'s bounds are static clips of its network",
          "alpha_max": "alpha(s)'s bounds are static clips of its network",
          "mmd_sigma": "the MMD kernel's width is a static argument of the divergence"}


def sweep_template(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """An empty sweep entry () for every field of `config`, nested alike, so that any field
  can be named on the command line and the ones that cannot be swept get a clear line."""

  def mirror(node: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        name: mirror(value) if isinstance(value, ml_collections.ConfigDict) else ()
        for name, value in node.items() if name != "sweep"})

  return mirror(config)


def swept_fields(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """{'algo.kl_margin': (0.5, 1.0, 3.0), ...}: the fields given values, in declaration order."""
  found: dict[str, tuple] = {}

  def walk(node, prefix):
    for name, value in node.items():
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(value, f"{prefix}{name}.")
      elif value is not None and len(value):  # () = not swept; JSON gives lists back
        found[f"{prefix}{name}"] = tuple(value)

  sweep = config.get("sweep")
  if sweep is not None:
    walk(sweep, "")
  return found


def why_not_sweepable(path: str, config: ml_collections.ConfigDict) -> str | None:
  """None if `path` can be swept in this config, else why not (`config.validate` says it)."""
  group, _, name = path.rpartition(".")
  if group != "algo":
    return "only algo fields can be swept (seeds: config.num_seeds; the schedule and data are shared)"
  if name in STATIC:
    return STATIC[name]
  if name not in SWEEPABLE:
    value = config.algo.get(name)
    if any(word in name for word in SHAPES):
      return "it changes array shapes"
    if isinstance(value, (str, bool)) or value is None:
      return "it chooses a code path"
    return "it is not one of the sweepable fields"
  needs = SWEEPABLE[name]
  for field, wanted, reason in [] if needs is None else needs if isinstance(needs, list) else [needs]:
    if config.algo.get(field) != wanted:
      return f"it has no effect with algo.{field} = {config.algo.get(field)!r} ({reason})"
  return None


def grid(config: ml_collections.ConfigDict) -> list[dict[str, float]]:
  """The sweep's points: one {path: value} per point, the last field varying fastest; one
  empty point without a sweep."""
  fields = swept_fields(config)
  return [dict(zip(fields, values)) for values in itertools.product(*fields.values())]


def point_config(config: ml_collections.ConfigDict, point: dict[str, float]) -> ml_collections.ConfigDict:
  """The config of one point: the swept fields set to its values, no sweep left."""
  single = ml_collections.ConfigDict(config.to_dict())
  for path, value in point.items():
    group, _, name = path.rpartition(".")
    single[group][name] = float(value)
  if "sweep" in single:
    single.sweep = sweep_template(single)
  return single


def point_label(point: dict[str, float]) -> str:
  """'kl_margin=0.5,tau=0.005' ('' for the one point of a run without a sweep)."""
  return ",".join(f"{path.rpartition('.')[2]}={value:g}" for path, value in point.items())


def run_name(config: ml_collections.ConfigDict, run_index: int) -> str:
  """'seed 3', or in a sweep 'seed 3 of point 1 (kl_margin=1)', for run `run_index`."""
  point, seed_index = divmod(run_index, config.num_seeds)
  name = f"seed {config.seed + seed_index}"
  return f"{name} of point {point} ({point_label(grid(config)[point])})" if is_sweep(config) else name


def run_values(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Per run (point-major, then seed): {algo field name: float32 [points x seeds]}."""
  points = grid(config)
  return {path.rpartition(".")[2]: np.repeat(np.asarray([p[path] for p in points], np.float32),
                                             config.num_seeds)
          for path in swept_fields(config)}


def num_runs(config: ml_collections.ConfigDict) -> int:
  return len(grid(config)) * config.num_seeds


def is_sweep(config: ml_collections.ConfigDict) -> bool:
  return bool(swept_fields(config))


def point_runs(point: int, num_seeds: int) -> slice:
  """The runs of sweep point `point` along the run axis: its seeds, in order."""
  return slice(point * num_seeds, (point + 1) * num_seeds)


def point_summaries(seed_scores: np.ndarray, points: list[dict[str, float]]) -> list[dict[str, Any]]:
  """Per point: its values, per-seed scores, mean, std and IQM (the mean of the middle 50%,
  rliable's interquartile mean) of `seed_scores` [points, seeds]."""
  from scipy import stats
  rows = []
  for point, scores in zip(points, np.asarray(seed_scores, np.float64)):
    rows.append({"point": len(rows), "values": point, "label": point_label(point),
                 "scores": [float(s) for s in scores], "mean": float(np.mean(scores)),
                 "std": float(np.std(scores)), "iqm": float(stats.trim_mean(scores, 0.25))})
  return rows
