"""The phases of a BRAC+ run in order (Alg. 1), for all seeds at once.

A run is a fixed sequence of units: the start-up stages (behaviour model, H0,
initial policy, eps_KL, initial critic, switch to RL), then one unit per epoch
of RL updates with eps_GP recomputed after it. Every unit is compiled blocks of
`lax.scan`ned steps, vmapped over the seed axis (and sharded over devices where
there are several), with a progress bar; nothing inside a block returns to the
host. The state and keys after any unit are all a run needs to go on, which is
what checkpoints store and `resume` restores.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bracplus_jax import config as config_lib
from bracplus_jax import learner, sweep
from bracplus_jax.data import OfflineDataset, monte_carlo
from bracplus_jax.errors import InputError

# Steps per compiled block (`config.block_steps`' default): long enough to amortise dispatch,
# short enough for a live progress bar.
BLOCK_STEPS = 1000
# States whose behaviour NLL estimates H0 (App. F).
TARGET_ENTROPY_STATES = 10_000
# Dataset rows whose Monte-Carlo returns the critic is compared with after its start-up phase
# and every epoch: enough for a correlation to 0.01, a fraction of a second per epoch.
CRITIC_CHECK_ROWS = 10_000
STAGES = ("behavior", "target_entropy", "policy_init", "kl_threshold", "critic_init", "start_rl")
AfterBlock = Callable[[int, Any, jax.Array], None]  # (blocks done, state, keys)
STAGE_PHASE = {"behavior": "behavior", "target_entropy": "behavior", "policy_init": "policy_init",
               "kl_threshold": "policy_init", "critic_init": "critic_init", "start_rl": "rl"}


def block_length(num_steps: int, block_steps: int = BLOCK_STEPS) -> int:
  """Steps per compiled block: an even split of `num_steps` into blocks of at most
  `block_steps` where one exists, so that a phase compiles once; otherwise `block_steps`
  and one shorter block at the end."""
  if num_steps <= block_steps:
    return num_steps
  for length in range(block_steps, block_steps // 4 - 1, -1):
    if num_steps % length == 0:
      return length
  return block_steps


def seed_keys(first_seed: int, num_seeds: int) -> jax.Array:
  """One independent key per seed: seeds first_seed .. first_seed + num_seeds - 1."""
  return jnp.stack([jax.random.key(first_seed + i) for i in range(num_seeds)])


def run_keys(config: ml_collections.ConfigDict) -> jax.Array:
  """One key per run: every point of a sweep gets the same seeds (`bracplus_jax.sweep`)."""
  keys = seed_keys(config.seed, config.num_seeds)
  return jnp.concatenate([keys] * len(sweep.grid(config)))


def run_values(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Each run's values of the swept algo fields, [runs] each ({} without a sweep)."""
  return {name: jnp.asarray(values) for name, values in sweep.run_values(config).items()}


def make_algorithm(config: ml_collections.ConfigDict, observation_dim: int, action_dim: int,
                   dataset_size: int | None = None):
  """The learner of a run's config, swept fields included; `dataset_size` (N) where it trains."""
  return learner.BRACPlus(
      config.algo, observation_dim, action_dim, behavior_steps=config.behavior_steps,
      policy_init_steps=config.policy_init_steps, swept=tuple(sweep.run_values(config)),
      dataset_size=dataset_size)


def check_state_gain(config: ml_collections.ConfigDict, dataset_size: int) -> None:
  """Refuses a constant state gain above N / B, before anything compiles: a batch reaches each
  state every N / B updates, so a larger gain moves a state's own part faster than Alg. 1."""
  algo = config.algo
  if algo.alpha != "state" or algo.get("alpha_dual_gain", "constant") != "constant":
    return
  if algo.get("alpha_dual_fit", "line_search") == "paper":
    return
  gains = sweep.run_values(config).get("alpha_dual_state_gain", [algo.get("alpha_dual_state_gain", 1.0)])
  limit = dataset_size / config.batch_size
  if max(gains) > limit:
    raise InputError(
        f"config.algo.alpha_dual_state_gain = {max(gains)!r} is above N / B = {dataset_size:,} / "
        f"{config.batch_size} = {limit:.1f}; expected at most {limit:.1f}, or "
        "config.algo.alpha_dual_gain = 'leverage', which sets each state's gain from the data")


def _split(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(keys to carry on, keys to use now), per seed."""
  pairs = jax.vmap(jax.random.split)(keys)
  return pairs[:, 0], pairs[:, 1]


def seed_sharding(num_seeds: int) -> Optional[NamedSharding]:
  """The seed axis split over all local devices, when there are several and they divide it."""
  devices = jax.devices()
  if len(devices) < 2 or num_seeds % len(devices):
    return None
  return NamedSharding(Mesh(np.array(devices), ("seeds",)), PartitionSpec("seeds"))


def state_template(algorithm: learner.BRACPlus, config: ml_collections.ConfigDict,
                   completed_units: int, sharding: Optional[NamedSharding] = None):
  """Shapes, dtypes and shardings of (state, keys) after `completed_units`, computing nothing."""

  def initial():
    keys, init_keys = _split(run_keys(config))
    return jax.vmap(algorithm.init)(init_keys, run_values(config)), keys

  state, keys = jax.eval_shape(initial)
  if completed_units > STAGES.index("start_rl") and config.method != "bc":
    state = jax.eval_shape(jax.vmap(algorithm.start_rl), state)
  if sharding is not None:
    state, keys = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), (state, keys))
  return state, keys


@dataclasses.dataclass
class UnitResult:
  name: str  # a stage name, or "epoch"
  epoch: Optional[int]  # 1-based for epochs
  gradient_steps: int  # steps of this unit per seed
  metrics: dict[str, np.ndarray]  # metric -> [seeds]; empty for stages without steps


class Trainer:
  """Algorithm 1 for one config and dataset: the units of a run, one at a time."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: OfflineDataset, progress: bool = True):
    config_lib.validate(config)
    self.config = config
    self.progress = progress
    self.num_runs = sweep.num_runs(config)  # sweep points x seeds
    self.sharding = seed_sharding(self.num_runs)
    transitions = dataset.transitions
    if self.sharding is not None:  # every device holds the whole dataset
      transitions = jax.device_put(transitions, NamedSharding(self.sharding.mesh, PartitionSpec()))
    self.transitions = transitions
    check_state_gain(config, transitions.size)
    self.algorithm = make_algorithm(
        config, transitions.observation_dim, transitions.action_dim, dataset_size=transitions.size)
    self._scans: dict[tuple[str, int], Callable] = {}
    # Sees every block as it ends, (phase, steps, seconds, compiled before it ran), for timing;
    # while it is set, each block is waited for. `bracplus_jax.estimate` uses it.
    self.on_block: Optional[Callable[[str, int, float, bool], None]] = None
    over_seeds = lambda f: jax.jit(jax.vmap(f, in_axes=(0, None, 0)))  # noqa: E731
    algorithm = self.algorithm
    self._init = jax.jit(jax.vmap(algorithm.init))
    self._start_rl = jax.jit(jax.vmap(algorithm.start_rl))
    self._set_target_entropy = over_seeds(algorithm.set_target_entropy)
    self._set_kl_threshold = over_seeds(
        lambda s, o, k: algorithm.set_kl_threshold(algorithm.end_policy_init(s), o, k)[0])
    self._gp_from_dataset = over_seeds(
        lambda s, o, k: algorithm.set_gp_threshold(s, o, k, use_dataset=True))
    self._gp_per_epoch = self._gp_from_dataset if config.algo.gp_threshold == "dataset" else (
        over_seeds(lambda s, o, k: algorithm.set_gp_threshold(s, o, k, use_dataset=False)))
    self._critic_check = None
    if config.method != "bc" and "gamma" not in sweep.run_values(config):
      self._critic_check = critic_check(transitions, config.algo.gamma)
      self._critic_fit = jax.jit(jax.vmap(algorithm.critic_fit, in_axes=(0, None, None, None)))
    self._steps = {"behavior": algorithm.behavior_step, "policy_init": algorithm.policy_init_step,
                   "critic_init": algorithm.critic_init_step,
                   "epoch": algorithm.bc_step if config.method == "bc" else algorithm.update}

  def critic_fit_metrics(self, state) -> dict[str, np.ndarray]:
    """The critic against the data's discounted Monte-Carlo returns ({} for BC or a swept gamma)."""
    if self._critic_check is None:
      return {}
    observations, actions, returns = self._critic_check
    return jax.tree.map(np.asarray, self._critic_fit(state, observations, actions, returns))

  @property
  def num_units(self) -> int:
    return len(STAGES) + self.config.epochs

  def _place(self, tree):
    return tree if self.sharding is None else jax.device_put(tree, self.sharding)

  def initial(self):
    """(state, keys) before the first unit."""
    keys, init_keys = _split(run_keys(self.config))
    return self._place(self._init(init_keys, run_values(self.config))), self._place(keys)

  def template(self, completed_units: int):
    """A (state, keys) of the structure a checkpoint after `completed_units` holds."""
    return state_template(self.algorithm, self.config, completed_units, self.sharding)

  def _scan(self, name: str, num_steps: int):
    if (name, num_steps) not in self._scans:
      run = learner.over_seeds(learner.scan_steps(self._steps[name], num_steps, self.config.batch_size))
      self._scans[(name, num_steps)] = jax.jit(run, donate_argnums=0)
    return self._scans[(name, num_steps)]

  def run_steps(self, name: str, state, keys, num_steps: int, description: str,
                 first_block: int = 0, after_block: Optional[AfterBlock] = None):
    """`num_steps` steps of every seed, from block `first_block` on; returns (state, keys,
    last block's metrics per seed). `after_block(blocks done, state, keys)` sees every block
    but the last as it ends: what a checkpoint inside the unit needs."""
    metrics = {}
    length = block_length(num_steps, self.config.get("block_steps", BLOCK_STEPS))
    done = min(first_block * length, num_steps)
    with tqdm.tqdm(total=num_steps, initial=done, desc=description, unit="step",
                   disable=not self.progress, dynamic_ncols=True, leave=True) as bar:
      while done < num_steps:
        block = min(length, num_steps - done)
        keys, block_keys = _split(keys)
        compiled, began = (name, block) in self._scans, time.perf_counter()
        state, metrics = self._scan(name, block)(state, self.transitions, block_keys)
        if self.on_block is not None:
          jax.block_until_ready(metrics)
          self.on_block(name, block, time.perf_counter() - began, compiled)
        done += block
        bar.update(block)
        if after_block is not None and done < num_steps:
          after_block(done // length, state, keys)
    return state, keys, jax.tree.map(np.asarray, metrics)

  def run_unit(self, unit: int, state, keys, first_block: int = 0,
               after_block: Optional[AfterBlock] = None):
    """Unit `unit` (0-based) of the run: (state, keys, UnitResult); a unit of steps starts
    at block `first_block` (a run resumed inside it) and reports its blocks to `after_block`."""
    config, transitions = self.config, self.transitions
    blocks = dict(first_block=first_block, after_block=after_block)
    if unit >= len(STAGES):
      epoch = unit - len(STAGES) + 1
      state, keys, metrics = self.run_steps(
          "epoch", state, keys, config.steps_per_epoch, f"epoch {epoch}/{config.epochs}", **blocks)
      if config.method == "bc":
        return state, keys, UnitResult("epoch", epoch, config.steps_per_epoch, metrics)
      keys, threshold_keys = _split(keys)
      state, epoch_metrics = self._gp_per_epoch(state, transitions.observations, threshold_keys)
      metrics |= jax.tree.map(np.asarray, epoch_metrics) | self.critic_fit_metrics(state)
      metrics["kl_threshold"] = np.asarray(state.kl_threshold)
      metrics["gp_threshold"] = np.asarray(state.gp_threshold)
      return state, keys, UnitResult("epoch", epoch, config.steps_per_epoch, metrics)
    name = STAGES[unit]
    if config.method == "bc":  # behaviour cloning has no start-up phases: its units pass empty
      return state, keys, UnitResult(name, None, 0, {})
    steps = {"behavior": config.behavior_steps, "policy_init": config.policy_init_steps,
             "critic_init": config.critic_init_steps}
    descriptions = {"behavior": "behaviour model", "policy_init": "initial policy",
                    "critic_init": "initial critic"}
    if name in steps:
      state, keys, metrics = self.run_steps(name, state, keys, steps[name], descriptions[name], **blocks)
      if name == "critic_init":  # how well the initial critic fits the data's returns
        metrics |= self.critic_fit_metrics(state)
      return state, keys, UnitResult(name, None, steps[name], metrics)
    keys, use_keys = _split(keys)
    if name == "target_entropy":  # H0 from the behaviour model's likelihood (App. F)
      sample = transitions.sample(jax.random.key(config.seed), min(transitions.size, TARGET_ENTROPY_STATES))
      state = self._set_target_entropy(state, sample, use_keys)
      metrics = {"target_entropy": np.asarray(state.target_entropy)}
    elif name == "kl_threshold":  # eps_KL from the initial policy (App. F), now also the target policy
      state = self._set_kl_threshold(state, transitions.observations, use_keys)
      metrics = {"kl_threshold": np.asarray(state.kl_threshold)}
    else:  # start_rl: the RL learning rates, and eps_GP for the first epoch from the initial policy
      state, metrics = self._gp_from_dataset(self._start_rl(state), transitions.observations, use_keys)
      metrics = jax.tree.map(np.asarray, metrics) | {"gp_threshold": np.asarray(state.gp_threshold)}
    return state, keys, UnitResult(name, None, 0, metrics)

  def run(self, after_unit=None, start=None, after_block=None):
    """Runs every unit for all seeds; returns the final (state, keys).

    `start` = (completed units, state, keys, blocks done of the next unit)
    resumes a run; `after_unit(unit, state, keys, result, seconds)` sees every
    unit as it ends, for evaluation, logs and checkpoints, and
    `after_block(unit, blocks done, state, keys, seconds)` every block inside a
    unit but its last, for checkpoints inside long phases. Seconds count from
    the unit's start in this process.
    """
    if start is None:
      completed, first_block, (state, keys) = 0, 0, self.initial()
    else:
      completed, state, keys, first_block = start
    for unit in range(completed, self.num_units):
      began = time.perf_counter()
      inside = None
      if after_block is not None:
        inside = lambda blocks, s, k, unit=unit: after_block(  # noqa: E731
            unit, blocks, s, k, time.perf_counter() - began)
      state, keys, result = self.run_unit(unit, state, keys, first_block if unit == completed else 0, inside)
      jax.block_until_ready(state)
      if after_unit is not None:
        after_unit(unit, state, keys, result, time.perf_counter() - began)
    return state, keys


def critic_check(transitions, discount: float, num_rows: int = CRITIC_CHECK_ROWS):
  """(observations, actions, discounted returns) of up to `num_rows` dataset rows whose
  Monte-Carlo return is complete (`data.monte_carlo`), on the device; None with fewer than two."""
  host = jax.tree.map(np.asarray, transitions)
  ends = monte_carlo.episode_ends(host.observations, host.next_observations, host.dones)
  returns, complete = monte_carlo.discounted_returns_to_go(host.rewards, host.dones, ends, discount)
  rows = monte_carlo.evaluation_rows(complete, num_rows)
  if len(rows) < 2:  # no episode long enough, or terminated, to know a return: nothing to check
    return None
  return (jnp.asarray(host.observations[rows]), jnp.asarray(host.actions[rows]),
          jnp.asarray(returns[rows], jnp.float32))


def train(config: ml_collections.ConfigDict, dataset: OfflineDataset, progress: bool = True):
  """The whole of Algorithm 1 for `config.num_seeds` seeds; returns the final state."""
  state, _ = Trainer(config, dataset, progress).run()
  return state
