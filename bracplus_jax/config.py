"""Checks a run's config once, before anything compiles: one line per problem, naming the field.

The sweep's fields are checked here too; `sweep` says which fields can be swept and reads
the grid from a config, and imports nothing from this module.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from bracplus_jax import sweep
from bracplus_jax.data.kinds import KINDS
from bracplus_jax.errors import InputError

CHOICES = {
    "method": ("brac_plus", "bc"),
    "algo.policy_scale": ("paper", "released"),
    "algo.matmul_dtype": ("float32", "bfloat16"),
    "algo.divergence": ("kl", "mmd"),
    "algo.kl_ensemble": ("random_per_state", "random_per_batch", "all"),
    "algo.alpha": ("state", "global"),
    "algo.alpha_dual_fit": ("kernel", "line_search", "paper"),
    "algo.alpha_paper_optimizer": ("adam", "sgd"),
    "algo.alpha_dual_violation": ("log", "relative"),
    "algo.alpha_dual_gain": ("rows", "leverage", "constant"),
    "algo.gp_weighting": ("hard", "soft", "off"),
    "algo.gp_threshold": ("dataset", "batch"),
    "algo.td_backup": ("expected", "max"),
    "algo.entropy_constraint": ("max", "min"),
    "algo.mmd_scale": ("root", "squared"),
    "algo.mmd_behavior_samples": ("sampled", "released"),
    "algo.startup_lr_schedule": ("constant", "released"),
    "wandb.mode": ("auto", "online", "offline", "disabled"),
    "eval_mode": ("deterministic", "best_of_q"),
    # '' = never make the dataset; the others are the kinds the collector makes, its recipes.
    "make_dataset.recipe": ("",) + KINDS,
}
POSITIVE_INTEGERS = (
    "num_seeds", "batch_size", "eval_every", "checkpoint_every", "checkpoint_every_blocks",
    "block_steps", "algo.behavior_ensemble_size", "algo.kl_latent_samples",
    "algo.kl_policy_samples", "algo.mmd_samples", "algo.td_max_samples",
)
NON_NEGATIVE_INTEGERS = (
    "behavior_steps", "policy_init_steps", "critic_init_steps", "epochs", "steps_per_epoch",
    "eval_episodes", "algo.behavior_latent_dim", "make_dataset.steps",
)
POSITIVE_NUMBERS = ("algo.mmd_sigma", "algo.alpha_init", "algo.entropy_init", "algo.alpha_dual_step",
                    "algo.alpha_min", "algo.alpha_max", "algo.alpha_dual_max_violation",
                    "algo.alpha_dual_damping", "algo.alpha_dual_state_gain", "algo.alpha_dual_row_step")
NON_NEGATIVE_NUMBERS = (
    "algo.behavior_lr", "algo.policy_init_lr", "algo.critic_lr", "algo.policy_lr", "algo.alpha_lr",
    "algo.entropy_lr", "algo.gp_lagrange_lr", "algo.gp_lambda", "algo.gp_max_ood_grad_norm",
    "algo.kl_margin", "algo.mmd_margin",
)
NUMBERS = ("algo.target_entropy_offset",)
UNIT_INTERVAL = ("algo.gamma", "algo.tau")
HIDDEN_DIMS = ("algo.policy_hidden_dims", "algo.critic_hidden_dims", "algo.behavior_hidden_dims",
               "algo.alpha_hidden_dims")


_MISSING = object()


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  """The field's value, or _MISSING in a run saved before the field existed."""
  value = config
  for part in path.split("."):
    if part not in value:
      return _MISSING
    value = value[part]
  return value


def _is_integer(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_widths(value: Any) -> bool:
  return isinstance(value, (tuple, list)) and bool(value) and all(
      _is_integer(width) and width >= 1 for width in value)


# (fields, test, what is expected), checked in this order.
RULES = (
    (POSITIVE_INTEGERS, lambda v: _is_integer(v) and v >= 1, "an integer >= 1"),
    (NON_NEGATIVE_INTEGERS, lambda v: _is_integer(v) and v >= 0, "an integer >= 0"),
    (POSITIVE_NUMBERS, lambda v: _is_number(v) and v > 0, "a number > 0"),
    (NON_NEGATIVE_NUMBERS, lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    (UNIT_INTERVAL, lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    (NUMBERS, _is_number, "a number"),
    (HIDDEN_DIMS, _is_widths, "a non-empty tuple of layer widths >= 1"),
)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises InputError naming the first field whose value is not allowed."""
  for path, allowed in CHOICES.items():
    value = _get(config, path)
    if value is not _MISSING and value not in allowed:
      raise InputError(f"config.{path} = {value!r}; expected one of "
                       f"{', '.join(choice or repr(choice) for choice in allowed)}")
  for paths, is_allowed, expected in RULES:
    for path in paths:
      value = _get(config, path)
      if value is not _MISSING and not is_allowed(value):
        raise InputError(f"config.{path} = {value!r}; expected {expected}")
  algo = config.algo
  if algo.alpha == "state" and not algo.alpha_min <= algo.alpha_init <= algo.alpha_max:
    raise InputError(
        f"config.algo.alpha_init = {algo.alpha_init!r}; expected a number in [algo.alpha_min, "
        f"algo.alpha_max] = [{algo.alpha_min!r}, {algo.alpha_max!r}]")
  target_entropy = config.algo.target_entropy
  if target_entropy is not None and not _is_number(target_entropy):
    raise InputError(
        f"config.algo.target_entropy = {target_entropy!r}; expected a number, or None for "
        "the behaviour NLL rule (- act_dim ln 4 with entropy_constraint 'max')")
  validate_sweep(config)


def validate_sweep(config: ml_collections.ConfigDict) -> None:
  """Raises InputError naming the first swept field that cannot be swept or has a bad value."""
  for path, values in sweep.swept_fields(config).items():
    reason = sweep.why_not_sweepable(path, config)
    if reason is not None:
      sweepable = ", ".join(f"algo.{name}" for name in sweep.SWEEPABLE)
      raise InputError(f"config.sweep.{path} cannot be swept: {reason}. Sweepable: {sweepable}")
    if len(set(values)) != len(values):
      raise InputError(f"config.sweep.{path} = {values!r}; expected distinct values")
    for value in values:  # each value must be one the field itself accepts
      if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InputError(f"config.sweep.{path} = {values!r}; expected numbers")
      try:
        validate(sweep.point_config(config, {path: value}))
      except InputError as error:  # "config.algo.<field> = <value>; expected ..."
        detail = str(error).partition("; ")[2] or str(error)
        raise InputError(f"config.sweep.{path} = {values!r}: {value!r} is not allowed; {detail}") from error
