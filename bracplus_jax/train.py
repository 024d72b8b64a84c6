"""The phases of a BRAC+ run in order (Alg. 1), for all seeds at once.

behaviour pre-training -> H0 -> initial policy -> eps_KL -> initial critic ->
epochs of RL updates, eps_GP recomputed after each. Every phase runs as
compiled blocks of `lax.scan`ned steps, vmapped over the seed axis, with a
progress bar; nothing inside a block returns to the host.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from bracplus_jax import config as config_lib
from bracplus_jax import learner
from bracplus_jax.data import OfflineDataset
from bracplus_jax.data.transitions import Transitions

# Steps per compiled block: long enough to amortise dispatch, short enough for a live progress bar.
BLOCK_STEPS = 1000
# States whose behaviour NLL estimates H0 (App. F).
TARGET_ENTROPY_STATES = 10_000

EpochCallback = Callable[[int, learner.BRACPlusState, dict[str, np.ndarray]], None]


@dataclasses.dataclass
class TrainResult:
  state: learner.BRACPlusState  # leading seed axis on every leaf
  phase_metrics: dict[str, dict[str, np.ndarray]]  # phase -> metric -> [seeds], last block's mean
  epoch_metrics: list[dict[str, np.ndarray]]  # per epoch: metric -> [seeds]
  phase_seconds: dict[str, float]


def seed_keys(first_seed: int, num_seeds: int) -> jax.Array:
  """One independent key per seed: seeds first_seed .. first_seed + num_seeds - 1."""
  return jnp.stack([jax.random.key(first_seed + i) for i in range(num_seeds)])


def block_length(num_steps: int) -> int:
  """Steps per compiled block: an even split of `num_steps` where one exists, so that a
  phase compiles once; otherwise BLOCK_STEPS and one shorter block at the end."""
  if num_steps <= BLOCK_STEPS:
    return num_steps
  for length in range(BLOCK_STEPS, BLOCK_STEPS // 4 - 1, -1):
    if num_steps % length == 0:
      return length
  return BLOCK_STEPS


def _split(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(keys to carry on, keys to use now), per seed."""
  pairs = jax.vmap(jax.random.split)(keys)
  return pairs[:, 0], pairs[:, 1]


class PhaseRunner:
  """Compiles each (step, number of steps) once and runs phases block by block."""

  def __init__(self, batch_size: int, progress: bool):
    self.batch_size = batch_size
    self.progress = progress
    self._compiled: dict[tuple[Callable, int], Callable] = {}

  def compiled(self, step: learner.Step, num_steps: int):
    cache_key = (step, num_steps)
    if cache_key not in self._compiled:
      run = learner.over_seeds(learner.scan_steps(step, num_steps, self.batch_size))
      self._compiled[cache_key] = jax.jit(run, donate_argnums=0)
    return self._compiled[cache_key]

  def run(self, step: learner.Step, state, transitions: Transitions, keys: jax.Array,
          num_steps: int, description: str):
    """`num_steps` steps of every seed; returns (state, keys, last block's metrics per seed)."""
    metrics = {}
    with tqdm.tqdm(total=num_steps, desc=description, unit="step", disable=not self.progress,
                   dynamic_ncols=True) as bar:
      done = 0
      while done < num_steps:
        block = min(block_length(num_steps), num_steps - done)
        keys, block_keys = _split(keys)
        state, metrics = self.compiled(step, block)(state, transitions, block_keys)
        done += block
        bar.update(block)
    return state, keys, jax.tree.map(np.asarray, metrics)


def train(config: ml_collections.ConfigDict, dataset: OfflineDataset, progress: bool = True,
          on_epoch: Optional[EpochCallback] = None) -> TrainResult:
  """Runs Algorithm 1 for `config.num_seeds` seeds of `dataset`; returns their final states."""
  config_lib.validate(config)
  transitions = dataset.transitions
  algorithm = learner.BRACPlus(config.algo, transitions.observation_dim, transitions.action_dim)
  runner = PhaseRunner(config.batch_size, progress)
  over_seeds = lambda f: jax.jit(jax.vmap(f, in_axes=(0, None, 0)))  # noqa: E731
  phase_metrics, phase_seconds = {}, {}
  keys, init_keys = _split(seed_keys(config.seed, config.num_seeds))

  def timed(name, function, *args):
    start = time.perf_counter()
    result = function(*args)
    jax.block_until_ready(result)
    phase_seconds[name] = phase_seconds.get(name, 0.0) + time.perf_counter() - start
    return result

  state = timed("init", jax.jit(jax.vmap(algorithm.init)), init_keys)

  # Line 1: the behaviour model, then H0 from its likelihood.
  state, keys, phase_metrics["behavior"] = timed(
      "behavior", runner.run, algorithm.behavior_step, state, transitions, keys,
      config.behavior_steps, "behaviour model")
  keys, entropy_keys = _split(keys)
  sample = transitions.sample(jax.random.key(config.seed), min(transitions.size, TARGET_ENTROPY_STATES))
  state = timed("behavior", over_seeds(algorithm.set_target_entropy), state, sample, entropy_keys)

  # Line 2: the initial policy, then eps_KL from its divergence over the dataset.
  state, keys, phase_metrics["policy_init"] = timed(
      "policy_init", runner.run, algorithm.policy_init_step, state, transitions, keys,
      config.policy_init_steps, "initial policy")
  keys, threshold_keys = _split(keys)
  state, _ = timed("policy_init", over_seeds(algorithm.set_kl_threshold),
                   state, transitions.observations, threshold_keys)

  # Line 3: the initial critic, Q of the initial policy.
  state, keys, phase_metrics["critic_init"] = timed(
      "critic_init", runner.run, algorithm.critic_init_step, state, transitions, keys,
      config.critic_init_steps, "initial critic")

  # Lines 4-12: epochs of RL updates; eps_GP for the first from the initial policy.
  state = jax.jit(jax.vmap(algorithm.start_rl))(state)
  gp_from_dataset = over_seeds(lambda s, o, k: algorithm.set_gp_threshold(s, o, k, use_dataset=True))
  gp_per_epoch = gp_from_dataset if config.algo.gp_threshold == "dataset" else over_seeds(
      lambda s, o, k: algorithm.set_gp_threshold(s, o, k, use_dataset=False))
  keys, threshold_keys = _split(keys)
  state = timed("rl", gp_from_dataset, state, transitions.observations, threshold_keys)
  epoch_metrics = []
  for epoch in range(1, config.epochs + 1):
    state, keys, metrics = timed(
        "rl", runner.run, algorithm.update, state, transitions, keys, config.steps_per_epoch,
        f"epoch {epoch}/{config.epochs}")
    keys, threshold_keys = _split(keys)
    state = timed("rl", gp_per_epoch, state, transitions.observations, threshold_keys)
    metrics["kl_threshold"] = np.asarray(state.kl_threshold)
    metrics["gp_threshold"] = np.asarray(state.gp_threshold)
    epoch_metrics.append(metrics)
    if on_epoch is not None:
      on_epoch(epoch, state, metrics)
  return TrainResult(state=state, phase_metrics=phase_metrics, epoch_metrics=epoch_metrics,
                     phase_seconds=phase_seconds)
