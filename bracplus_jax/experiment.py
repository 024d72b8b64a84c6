"""A training run as users start it: checks, run directory, training, evaluation, logs, checkpoints.

Everything that can be wrong with the input is checked before anything
compiles. A run directory is never overwritten: a new run that names an
existing one gets a fresh name, and `resume` continues a stopped run from its
last checkpoint, with the same result an uninterrupted run would have had.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Optional

import ml_collections
import numpy as np
import tqdm

import jax
import jax.numpy as jnp

from bracplus_jax import checkpoints, data, envs, estimate, evaluation, files, run_log, sweep, train
from bracplus_jax import config as config_lib
from bracplus_jax.collection import collect
from bracplus_jax.errors import InputError, RunError


# config.checkpoint_every_blocks for runs saved before the field existed.
DEFAULT_CHECKPOINT_EVERY_BLOCKS = 50


def check_environment(env_id: str) -> None:
  try:
    envs.make(env_id).close()
  except InputError as error:
    raise InputError(f"config.env: {error}") from error


def run_directory(workdir: str, resume: bool) -> str:
  """The folder this run writes to: `workdir`, or a fresh sibling if that one is taken."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if resume:
    if not os.path.isfile(os.path.join(workdir, "config.json")):
      raise InputError(f"--resume: {workdir} holds no run to resume (no config.json)")
    return workdir
  candidate, number = workdir, 1
  while os.path.exists(candidate) and os.listdir(candidate):
    number += 1
    candidate = f"{workdir}-{number}"
  try:
    os.makedirs(candidate, exist_ok=True)
    probe = os.path.join(candidate, ".write-test")
    open(probe, "w").close()
    os.remove(probe)
  except OSError as error:
    raise InputError(f"--workdir: cannot write to {candidate} ({error.strerror})") from error
  return candidate


def make_dataset_if_missing(config: ml_collections.ConfigDict) -> None:
  """Makes the config's dataset with the collector when its file does not exist yet.

  "random" is a plain random rollout; the other recipes train SAC first (see
  `bracplus_jax.collection.collect`), in the file's folder, where later recipes reuse it.
  """
  recipe = config.make_dataset.recipe
  kind, _, path = config.dataset.partition(":")
  path = os.path.expanduser(path)
  if not recipe or kind != "hdf5" or os.path.exists(path):
    return
  if recipe == "random":
    print(f"{path} does not exist yet: collecting it (random, {config.make_dataset.steps} steps "
          f"in {config.env}); later runs reuse it")
    collect.collect(config.env, recipe, config.make_dataset.steps, path, seed=config.make_dataset.seed)
    return
  print(f"{path} does not exist yet: making D4RL's '{recipe}' recipe in {config.env} (SAC first, "
        f"unless {os.path.dirname(path)} has its run); later runs reuse both")
  collect.make_recipe(config.env, recipe, path, collect.RecipeOptions(
      steps=config.make_dataset.steps, seed=config.make_dataset.seed, sac=collect.DEFAULT_SAC))


def write_json_atomically(path: str, value: Any) -> None:
  """Writes JSON atomically (`files.write_json_atomically`): a run killed while writing leaves
  the old file or none, never half of one that a resume cannot read."""
  files.write_json_atomically(path, value, default=list)


def _non_finite(metrics: dict[str, np.ndarray]) -> Optional[tuple[str, int, float]]:
  for name, values in metrics.items():
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
      return name, int(bad[0]), float(values[bad[0]])
  return None


def _table(rows: list[list[str]]) -> str:
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


class Experiment:
  """One run directory's worth of training, evaluation, logging and checkpoints."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, resume: bool = False,
               progress: bool = True):
    if not resume:  # a bad config makes no run directory
      config_lib.validate(config)
      run_log.require_wandb(config.wandb.mode)
    self.run_dir = run_directory(workdir, resume)
    if resume:  # a resumed run goes on with the config it started with
      with open(os.path.join(self.run_dir, "config.json")) as file:
        config = ml_collections.ConfigDict(json.load(file))
    config_lib.validate(config)
    check_environment(config.env)
    self.config = config
    self.progress = progress
    self.resume = resume
    make_dataset_if_missing(config)
    self.dataset = data.load_dataset(config.dataset, scale_rewards=config.scale_rewards,
                                     clip_actions=config.clip_actions, env_id=config.env,
                                     progress=progress)
    self.checkpointer = checkpoints.Checkpointer(os.path.join(self.run_dir, "checkpoints"))
    if resume and self.checkpointer.latest() is None:  # stopped before its first checkpoint
      print(f"{self.run_dir} has no checkpoint yet: starting it from the beginning there")
    if not resume:
      write_json_atomically(os.path.join(self.run_dir, "config.json"), config.to_dict())
    self.trainer = train.Trainer(config, self.dataset, progress)
    self.points = sweep.grid(config)  # one empty point without a sweep
    self.is_sweep = sweep.is_sweep(config)
    self.log = run_log.RunLog(self.run_dir, config, config.name, resume)
    self.phase_seconds: dict[str, float] = {}
    self.gradient_steps = 0
    self.last_evaluation: Optional[dict[str, np.ndarray]] = None

  # -------------------------------------------------------------------------

  def evaluate(self, state, epoch: int) -> dict[str, np.ndarray]:
    """Returns and normalised scores of every run's policy: [runs] each, means over episodes.

    Each sweep point's seeds play the same episodes (environment seeds) as a run
    of that point alone would."""
    config, algorithm = self.config, self.trainer.algorithm
    began = time.perf_counter()
    episodes = []
    for point in range(len(self.points)):
      runs = sweep.point_runs(point, config.num_seeds)
      policy_params, critic_params = jax.tree.map(lambda x: x[runs], (state.policy.params, state.critic.params))
      episodes.append(evaluation.evaluate_episodes(
          algorithm.policy, policy_params, config.env, config.eval_episodes,
          seed=config.seed * 100_003 + epoch, mode=config.eval_mode,
          critic=algorithm.critic, critic_params=critic_params, discount=config.algo.gamma,
          reward_scale=self.dataset.reward_scale))
    returns = np.concatenate([e.returns for e in episodes])
    discounted = np.concatenate([e.discounted_returns for e in episodes])
    self.phase_seconds["evaluation"] = self.phase_seconds.get("evaluation", 0.0) + (
        time.perf_counter() - began)
    result = {"return": returns.mean(axis=1), "return_episode_std": returns.std(axis=1),
              "discounted_return": discounted.mean(axis=1)}
    normalized = self.dataset.normalized_score(returns)
    if normalized is not None:
      result["normalized_score"] = normalized.mean(axis=1)
    if config.method == "brac_plus":  # BC trains no critic
      initial_q = self._initial_q(state, np.concatenate([e.initial_observations for e in episodes]),
                                  np.concatenate([e.initial_actions for e in episodes]))
      # Over-estimation: what the critic promised at the first step against what the policy got.
      result |= {"q_initial": initial_q.mean(axis=1),
                 "q_overestimation": (initial_q - discounted).mean(axis=1)}
    return result

  def _initial_q(self, state, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """min_j Q_j(s0, a0) of every run's critic at its episodes' first steps: [runs, E]."""
    critic = self.trainer.algorithm.critic
    q_values = jax.vmap(critic.apply)(state.critic.params, jnp.asarray(observations), jnp.asarray(actions))
    return np.asarray(jnp.min(q_values, axis=1))

  def _after_unit(self, unit: int, state, keys, result: train.UnitResult, seconds: float) -> None:
    config = self.config
    phase = "rl" if result.name == "epoch" else train.STAGE_PHASE[result.name]
    self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + seconds
    self.gradient_steps += result.gradient_steps
    bad = _non_finite(result.metrics)
    if bad is not None:
      name, seed_index, value = bad
      where = f"epoch {result.epoch}" if result.epoch else f"the {result.name} phase"
      latest = self.checkpointer.latest()
      kept = (f"the last good checkpoint ({latest}) is kept in {self.checkpointer.directory}"
              if latest is not None else "no checkpoint had been written yet")
      raise RunError(f"metric '{name}' became {value} for {sweep.run_name(config, seed_index)} in "
                     f"{where}; the run stopped and {kept}")
    if result.metrics:
      self.log.log(result.name, self.gradient_steps, result.metrics, result.epoch)
    last_unit = unit == self.trainer.num_units - 1
    # Epoch 0 is the initial policy (argmin KL to the behaviour model), evaluated before the
    # first RL epoch: each learning curve starts from its own cloning baseline.
    initial_policy = result.name == "start_rl" and config.method == "brac_plus"
    if config.eval_episodes and (initial_policy or result.epoch is not None and (
        result.epoch % config.eval_every == 0 or last_unit)):
      epoch = 0 if initial_policy else result.epoch
      self.last_evaluation = self.evaluate(state, epoch)
      self.log.log("eval", self.gradient_steps, self.last_evaluation, epoch)
      if self.progress:
        print(self._evaluation_line(epoch, self.last_evaluation), flush=True)
    if result.epoch is None or result.epoch % config.checkpoint_every == 0 or last_unit:
      self.checkpointer.save_next(state, keys, {
          "completed_units": unit + 1, "gradient_steps": self.gradient_steps,
          "phase_seconds": self.phase_seconds, "log_lines": self.log.lines})

  def _after_block(self, unit: int, blocks_done: int, state, keys, seconds: float) -> None:
    """Inside a long unit (the 400k-step behaviour phase, say): a checkpoint every
    `checkpoint_every_blocks` blocks, from which a resumed run goes on mid-unit."""
    if blocks_done % self.config.get("checkpoint_every_blocks", DEFAULT_CHECKPOINT_EVERY_BLOCKS):
      return
    phase = "rl" if unit >= len(train.STAGES) else train.STAGE_PHASE[train.STAGES[unit]]
    phase_seconds = dict(self.phase_seconds)
    phase_seconds[phase] = phase_seconds.get(phase, 0.0) + seconds
    self.checkpointer.save_next(state, keys, {
        "completed_units": unit, "unit_blocks_done": blocks_done,
        "gradient_steps": self.gradient_steps, "phase_seconds": phase_seconds,
        "log_lines": self.log.lines})

  def _evaluation_line(self, epoch: int, evaluation_result: dict[str, np.ndarray]) -> str:
    lines = []
    for point in range(len(self.points)):
      runs = sweep.point_runs(point, self.config.num_seeds)
      returns = evaluation_result["return"][runs]
      line = f"return {returns.mean():.1f} +- {returns.std():.1f}"
      if "normalized_score" in evaluation_result:
        scores = evaluation_result["normalized_score"][runs]
        line += f", normalised score {scores.mean():.1f} +- {scores.std():.1f}"
      line += f" over {self.config.num_seeds} seed(s)"
      lines.append(f"epoch {epoch}, {sweep.point_label(self.points[point])}: {line}" if self.is_sweep
                   else f"epoch {epoch}: {line}")
    return "\n".join(lines)

  def run(self) -> dict[str, Any]:
    """Trains (or goes on training) to the end; writes and returns the summary."""
    start = None
    restored = self.checkpointer.restore_latest(self.trainer.template) if self.resume else None
    if restored is not None:
      state, keys, progress = restored
      self.gradient_steps = progress["gradient_steps"]
      self.phase_seconds = dict(progress["phase_seconds"])
      completed, blocks = progress["completed_units"], progress.get("unit_blocks_done", 0)
      start = (completed, state, keys, blocks)
      if "log_lines" in progress:  # lines logged after this checkpoint are logged again
        self.log.rewind(progress["log_lines"])
      where = f"block {blocks} of unit {completed + 1}" if blocks else f"unit {completed}"
      print(f"resuming {self.run_dir} after {where} of {self.trainer.num_units}")
    if self.progress:
      self._time_the_phases(estimate.done_updates(self.config, start[0], start[3]) if start else None)
    try:
      state, _ = self.trainer.run(self._after_unit, start, self._after_block)
    finally:
      self.checkpointer.close()
    if self.config.eval_episodes and self.last_evaluation is None:
      self.last_evaluation = self.evaluate(state, self.config.epochs)
    summary = self.summary()
    write_json_atomically(os.path.join(self.run_dir, "summary.json"), summary)
    self.log.finish([{"final_return_mean": point.get("return_mean", math.nan),
                      "final_normalized_score_mean": point.get("normalized_score_mean", math.nan)}
                     for point in summary.get("points", [summary])])
    return summary

  def _time_the_phases(self, done: Optional[dict[str, int]]) -> None:
    """Prints the run's work, then an estimate from each phase's first compiled block."""
    print(estimate.work_line(self.config, self.trainer.num_runs), flush=True)
    estimator = estimate.Estimator(self.config, done, write=tqdm.tqdm.write)

    def on_block(phase: str, updates: int, seconds: float, compiled: bool) -> None:
      estimator.on_block(phase, updates, seconds, compiled)
      if estimator.finished:  # the blocks need no longer be waited for
        self.trainer.on_block = None

    self.trainer.on_block = on_block

  def summary(self) -> dict[str, Any]:
    config = self.config
    summary: dict[str, Any] = {
        "name": config.name, "dataset": config.dataset, "env": config.env,
        "dataset_checksum": self.dataset.checksum, "versions": data.identity.run_versions(),
        "seeds": [config.seed + i for i in range(config.num_seeds)],
        "gradient_steps_per_seed": self.gradient_steps,
        "phase_seconds": {k: round(v, 2) for k, v in self.phase_seconds.items()},
        "run_dir": self.run_dir,
    }
    if self.last_evaluation is None:
      return summary
    if not self.is_sweep:
      return summary | _scores(self.last_evaluation)
    # Per point: its values and its seeds' scores; lists over all runs stay beside them.
    summary["sweep"] = {path: list(values) for path, values in sweep.swept_fields(config).items()}
    summary |= {name: [float(v) for v in values] for name, values in self.last_evaluation.items()}
    metric = "normalized_score" if "normalized_score" in self.last_evaluation else "return"
    per_run = np.asarray(self.last_evaluation[metric]).reshape(len(self.points), config.num_seeds)
    points = sweep.point_summaries(per_run, self.points)
    for index, point in enumerate(points):
      runs = sweep.point_runs(index, config.num_seeds)
      point |= _scores({name: values[runs] for name, values in self.last_evaluation.items()})
    summary["points"] = points
    summary["score_metric"] = metric
    summary["best_point"] = int(np.argmax([point["mean"] for point in points]))
    return summary

  def table(self, summary: dict[str, Any]) -> str:
    if "points" in summary:
      return sweep_table(summary)
    has_score = "normalized_score" in summary
    rows = [["seed", "return"] + (["normalised score"] if has_score else [])]
    for i, seed in enumerate(summary["seeds"]):
      rows.append([str(seed), f"{summary['return'][i]:.1f}"]
                  + ([f"{summary['normalized_score'][i]:.1f}"] if has_score else []))
    rows.append(["mean +- std", f"{summary['return_mean']:.1f} +- {summary['return_std']:.1f}"]
                + ([f"{summary['normalized_score_mean']:.1f} +- {summary['normalized_score_std']:.1f}"]
                   if has_score else []))
    return _table(rows)


def _scores(evaluation_result: dict[str, np.ndarray]) -> dict[str, Any]:
  """Per-seed lists of an evaluation's figures, with their mean and std over seeds."""
  scores = {}
  for name, values in evaluation_result.items():
    scores[name] = [float(v) for v in values]
    if name != "return_episode_std":
      scores[f"{name}_mean"] = float(np.mean(values))
      scores[f"{name}_std"] = float(np.std(values))
  return scores


def sweep_table(summary: dict[str, Any]) -> str:
  """One row per sweep point: its values, then mean +- std and IQM of its seeds' final scores."""
  fields = list(summary["sweep"])
  metric = "normalised score" if summary["score_metric"] == "normalized_score" else "return"
  rows = [["point"] + [path.rpartition(".")[2] for path in fields]
          + [f"{metric} mean +- std", "IQM", "per seed"]]
  for point in summary["points"]:
    best = " *" if point["point"] == summary["best_point"] else ""
    rows.append([f"{point['point']}{best}"] + [f"{point['values'][path]:g}" for path in fields]
                + [f"{point['mean']:.1f} +- {point['std']:.1f}", f"{point['iqm']:.1f}",
                   " ".join(f"{score:.1f}" for score in point["scores"])])
  return _table(rows) + "\n(* the best point by mean)"


def run(config: ml_collections.ConfigDict, workdir: str, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
  experiment = Experiment(config, workdir, resume, progress)
  print(f"run directory: {experiment.run_dir}")
  summary = experiment.run()
  if "return" in summary:
    print(experiment.table(summary))
  print(f"summary: {os.path.join(experiment.run_dir, 'summary.json')}")
  return summary
