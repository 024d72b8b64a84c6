"""Online soft actor-critic (Haarnoja et al. 2018): the behaviour policies of the dataset recipes.

SAC here trains the project's `TanhGaussianPolicy` and `TwinCritic` in a
gymnasium MuJoCo environment, with the temperature tuned towards a target
entropy of -act_dim (Haarnoja et al. 2018b, Sec. 5). The schedule is UTD 1 in
chunks: collect `chunk_steps` environment steps with the current policy, then
run as many updates in one compiled `lax.scan`. The policy acts in [-1, 1];
an env whose action box is wider is rescaled to it (`make_env`).

Policy checkpoints are single msgpack files (`save_policy`, `load_policy`)
holding the parameters and the module's configuration, so a policy loads
without the config that trained it:

  policy = sac.load_policy("runs/hopper/policy_best.msgpack")
  actions = policy.act(observations, jax.random.PRNGKey(0))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import flax.serialization
import flax.struct
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax.training.train_state import TrainState

from bracplus_jax import distributions, networks
from bracplus_jax.data.transitions import Transitions
from bracplus_jax.files import atomic_path, write_atomically

# The policy files' format tag. It names the module's first home, bracplus_jax.sac, and stays
# so: files saved there load here.
CHECKPOINT_FORMAT = "bracplus_jax.sac.policy/1"
RUN_FILE = "run.json"
REPLAY_FILE = "replay.npz"

# observations [n, obs] -> actions [n, act] in [-1, 1]
BatchPolicy = Callable[[np.ndarray], np.ndarray]
# (observations [N, obs], actions [N, act]) -> Q-values [2, N]
CriticFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SACConfig:
  """Every knob of a SAC run; the defaults are SAC's MuJoCo settings with 2 x 256 networks."""

  total_steps: int = 300_000  # environment steps, one update each once updates start
  hidden_dims: tuple[int, ...] = (256, 256)
  learning_rate: float = 3e-4
  discount: float = 0.99
  tau: float = 0.005  # Polyak rate of the target critic
  batch_size: int = 256
  initial_temperature: float = 1.0
  start_steps: int = 5_000  # uniform random actions and no updates before this many steps
  chunk_steps: int = 100  # steps collected, then as many updates in one compiled call
  eval_every: int = 5_000
  eval_episodes: int = 5
  num_envs: int = 1
  deterministic_eval: bool = False  # evaluate the policy as it acts in the data: sampling
  seed: int = 0

  def validate(self) -> None:
    positive = ("total_steps", "learning_rate", "batch_size", "initial_temperature", "chunk_steps",
                "eval_every", "eval_episodes", "num_envs")
    for name in positive:
      if getattr(self, name) <= 0:
        raise ValueError(f"SAC {name} is {getattr(self, name)}; expected a positive value")
    if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.discount < 1.0:
      raise ValueError(f"SAC tau {self.tau} must lie in (0, 1] and discount {self.discount} in [0, 1)")
    if self.start_steps < 0 or not self.hidden_dims:
      raise ValueError("SAC start_steps must be >= 0 and hidden_dims non-empty")
    for name in ("total_steps", "eval_every"):
      if getattr(self, name) % self.chunk_steps:
        raise ValueError(f"SAC {name} {getattr(self, name)} is not a multiple of chunk_steps {self.chunk_steps}")


# ---------------------------------------------------------------------------
# The objectives (Haarnoja et al. 2018b, Eqs. 5, 7, 18): SAC's own, not BRAC+'s `losses`
# ---------------------------------------------------------------------------


def td_target(
    next_q_values: jax.Array,
    next_log_prob: jax.Array,
    rewards: jax.Array,
    terminals: jax.Array,
    temperature: jax.Array,
    discount: float,
) -> jax.Array:
  """y = r + gamma (1 - terminal) (min_j Q'_j(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s') (Eq. 5).

  next_q_values [2, N] from the target critic, next_log_prob [N]. Only a
  terminal state stops the bootstrap; a time-limit cut does not.
  """
  soft_next_value = jnp.min(next_q_values - temperature * next_log_prob, axis=0)
  return jax.lax.stop_gradient(rewards + discount * (1.0 - terminals) * soft_next_value)


def critic_loss(
    critic_params, critic_apply: Callable[..., jax.Array], batch: Transitions, targets: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """sum_j E[(Q_j(s, a) - y)^2] over the two Q heads, y from `td_target` (Eq. 5)."""
  q_values = critic_apply(critic_params, batch.observations, batch.actions)
  loss = jnp.sum(jnp.mean((q_values - targets) ** 2, axis=-1))
  return loss, {"td_loss": loss, "q_mean": jnp.mean(q_values), "target_mean": jnp.mean(targets)}


def actor_loss(
    policy_params,
    policy_apply: Callable[..., tuple[jax.Array, jax.Array]],
    critic_fn: CriticFn,
    observations: jax.Array,
    temperature: jax.Array,
    key: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """E_s E_{a~pi}[alpha log pi(a|s) - min_j Q_j(s, a)] with a reparameterised draw (Eq. 7)."""
  mean, std = policy_apply(policy_params, observations)
  actions, pre_tanh = distributions.sample_tanh_gaussian(key, mean, std)
  log_prob = distributions.tanh_gaussian_log_prob(pre_tanh, mean, std)
  q_values = jnp.min(critic_fn(observations, actions), axis=0)
  loss = jnp.mean(jax.lax.stop_gradient(temperature) * log_prob - q_values)
  return loss, {"actor_loss": loss, "policy_q": jnp.mean(q_values), "log_prob": log_prob}


def temperature_loss(
    temperature: jax.Array, log_prob: jax.Array, target_entropy: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """J(alpha) = E[-alpha (log pi(a|s) + H_target)] (Eq. 18).

  Its gradient is H - H_target with H = -E[log pi]: a descent step lowers the
  temperature while the policy is more random than the target and raises it
  while it is less.
  """
  loss = -jnp.mean(temperature * jax.lax.stop_gradient(log_prob + target_entropy))
  return loss, {"temperature_loss": loss, "temperature": temperature, "entropy": -jnp.mean(log_prob)}


# ---------------------------------------------------------------------------
# Train state and the compiled update
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class SACState:
  policy: TrainState
  critic: TrainState
  target_critic_params: Any
  temperature: TrainState


def policy_module(action_dim: int, hidden_dims: Sequence[int]) -> networks.TanhGaussianPolicy:
  return networks.TanhGaussianPolicy(action_dim, tuple(hidden_dims), scale="paper")


@functools.partial(jax.jit, static_argnums=(1, 2, 3))  # one compile, not one per initialiser op
def init_state(key: jax.Array, observation_dim: int, action_dim: int, config: SACConfig) -> SACState:
  policy_key, critic_key = jax.random.split(key)
  observations = jnp.zeros((1, observation_dim), jnp.float32)
  actions = jnp.zeros((1, action_dim), jnp.float32)
  policy = policy_module(action_dim, config.hidden_dims)
  critic = networks.TwinCritic(tuple(config.hidden_dims))
  temperature = networks.LagrangeMultiplier(config.initial_temperature)
  critic_params = critic.init(critic_key, observations, actions)

  def train_state(module, params):
    return TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(config.learning_rate))

  return SACState(
      policy=train_state(policy, policy.init(policy_key, observations)),
      critic=train_state(critic, critic_params),
      target_critic_params=jax.tree.map(jnp.copy, critic_params),  # own buffers: the state is donated
      temperature=train_state(temperature, temperature.init(jax.random.PRNGKey(0))),
  )


def update(
    state: SACState, batch: Transitions, key: jax.Array, *, discount: float, tau: float, target_entropy: float
) -> tuple[SACState, dict[str, jax.Array]]:
  """One SAC step: critic, then actor against the new critic, then temperature, then the target."""
  target_key, actor_key = jax.random.split(key)
  temperature = state.temperature.apply_fn(state.temperature.params)

  next_mean, next_std = state.policy.apply_fn(state.policy.params, batch.next_observations)
  next_actions, next_pre_tanh = distributions.sample_tanh_gaussian(target_key, next_mean, next_std)
  next_log_prob = distributions.tanh_gaussian_log_prob(next_pre_tanh, next_mean, next_std)
  next_q_values = state.critic.apply_fn(state.target_critic_params, batch.next_observations, next_actions)
  targets = td_target(next_q_values, next_log_prob, batch.rewards, batch.dones, temperature, discount)
  critic_grads, critic_metrics = jax.grad(critic_loss, has_aux=True)(
      state.critic.params, state.critic.apply_fn, batch, targets)
  critic = state.critic.apply_gradients(grads=critic_grads)

  critic_fn = functools.partial(critic.apply_fn, critic.params)
  actor_grads, actor_metrics = jax.grad(actor_loss, has_aux=True)(
      state.policy.params, state.policy.apply_fn, critic_fn, batch.observations, temperature, actor_key)
  policy = state.policy.apply_gradients(grads=actor_grads)

  log_prob = jax.lax.stop_gradient(actor_metrics.pop("log_prob"))

  def temperature_objective(params):
    return temperature_loss(state.temperature.apply_fn(params), log_prob, target_entropy)

  temperature_grads, temperature_metrics = jax.grad(temperature_objective, has_aux=True)(
      state.temperature.params)
  new_state = SACState(
      policy=policy,
      critic=critic,
      target_critic_params=optax.incremental_update(critic.params, state.target_critic_params, tau),
      temperature=state.temperature.apply_gradients(grads=temperature_grads),
  )
  return new_state, critic_metrics | actor_metrics | temperature_metrics


def make_train_chunk(config: SACConfig, target_entropy: float):
  """A compiled (state, batches [K, B, ...], key) -> (state, mean metrics): K updates in one scan."""
  step = functools.partial(update, discount=config.discount, tau=config.tau, target_entropy=target_entropy)

  def train_chunk(state: SACState, batches: Transitions, key: jax.Array):
    keys = jax.random.split(key, batches.rewards.shape[0])
    state, metrics = jax.lax.scan(lambda carry, inputs: step(carry, *inputs), state, (batches, keys))
    return state, jax.tree.map(jnp.mean, metrics)

  return jax.jit(train_chunk, donate_argnums=0)


@functools.lru_cache(maxsize=None)
def make_act(policy: networks.TanhGaussianPolicy, deterministic: bool):
  """A compiled (params, observations, key, counter) -> actions; the counter is folded into the key.

  One compiled function per policy shape: equal modules share it.
  """

  def act(params, observations, key, counter):
    mean, std = policy.apply(params, observations)
    if deterministic:
      return distributions.deterministic_action(mean)
    actions, _ = distributions.sample_tanh_gaussian(jax.random.fold_in(key, counter), mean, std)
    return actions

  return jax.jit(act)


# ---------------------------------------------------------------------------
# Policy checkpoints
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class PolicyCheckpoint:
  """A saved policy: the module, its parameters and where they came from."""

  module: networks.TanhGaussianPolicy
  params: Any
  env_id: str
  observation_dim: int
  step: int  # environment steps of training behind it
  evaluated_return: Optional[float]

  def act(self, observations: np.ndarray, key: jax.Array, deterministic: bool = False) -> np.ndarray:
    """Actions for observations [..., obs]: tanh-Gaussian draws, or tanh(mean) if deterministic."""
    return np.asarray(make_act(self.module, deterministic)(
        self.params, jnp.asarray(observations, jnp.float32), key, 0))

  def batch_policy(self, seed: int, deterministic: bool = False) -> BatchPolicy:
    """A stateful host policy that draws fresh noise on every call."""
    return policy_acting(make_act(self.module, deterministic), self.params, jax.random.PRNGKey(seed))


def save_policy(path: str, checkpoint: PolicyCheckpoint) -> None:
  """One msgpack file (params + module config + provenance), written under a temporary name and renamed."""
  record = {
      "format": CHECKPOINT_FORMAT,
      "module": {"action_dim": checkpoint.module.action_dim,
                 "hidden_dims": list(checkpoint.module.hidden_dims),
                 "scale": checkpoint.module.scale},
      "env_id": checkpoint.env_id,
      "observation_dim": checkpoint.observation_dim,
      "step": checkpoint.step,
      "evaluated_return": float("nan") if checkpoint.evaluated_return is None else checkpoint.evaluated_return,
      "params": jax.tree.map(np.asarray, checkpoint.params),
  }
  write_atomically(path, flax.serialization.msgpack_serialize(record))


def load_policy(path: str) -> PolicyCheckpoint:
  """Reads a `save_policy` file; raises ValueError naming what is wrong with it."""
  with open(path, "rb") as file:
    try:
      record = flax.serialization.msgpack_restore(file.read())
    except Exception as error:  # msgpack raises several unrelated types on bad bytes
      raise ValueError(f"{path}: not a policy checkpoint ({type(error).__name__})") from error
  if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
    raise ValueError(f"{path}: not a policy checkpoint; expected format {CHECKPOINT_FORMAT}")
  module_config = record["module"]
  module = networks.TanhGaussianPolicy(
      int(module_config["action_dim"]), tuple(int(width) for width in module_config["hidden_dims"]),
      scale=str(module_config["scale"]))
  evaluated_return = float(record["evaluated_return"])
  return PolicyCheckpoint(
      module=module,
      params=jax.tree.map(jnp.asarray, record["params"]),
      env_id=str(record["env_id"]),
      observation_dim=int(record["observation_dim"]),
      step=int(record["step"]),
      evaluated_return=None if np.isnan(evaluated_return) else evaluated_return,
  )


# ---------------------------------------------------------------------------
# Environments, replay buffer and evaluation (host side)
# ---------------------------------------------------------------------------


def make_env(env_id: str) -> gym.Env:
  """The env with its action box mapped affinely onto [-1, 1], the tanh policy's range.

  A box already inside [-1, 1] (every env the dataset recipes accept) is left
  as it is, so stored actions are the env's own.
  """
  env = gym.make(env_id)
  space = env.action_space
  if isinstance(space, gym.spaces.Box) and (space.low.min() < -1.0 or space.high.max() > 1.0):
    env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
  return env


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
  """Next-step autoreset, named explicitly: the step after an episode ends only resets that env."""
  return gym.vector.SyncVectorEnv(
      [lambda: make_env(env_id) for _ in range(num_envs)],
      autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def mujoco_state(envs: gym.vector.SyncVectorEnv) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """(qpos, qvel) of every sub-env before its step, or None if the env is not MuJoCo."""
  datas = [getattr(env.unwrapped, "data", None) for env in envs.envs]
  if any(data is None for data in datas):
    return None
  return np.stack([data.qpos for data in datas]), np.stack([data.qvel for data in datas])


class ReplayBuffer:
  """Preallocated host arrays, one row per real transition in arrival order; never overwritten.

  Rows keep D4RL's layout (terminals and timeouts separate) plus the sub-env
  each row came from, so the stream can be cut back into episodes.
  """

  def __init__(self, capacity: int, observation_dim: int, action_dim: int,
               qpos_dim: Optional[int] = None, qvel_dim: Optional[int] = None):
    self.capacity = capacity
    self.size = 0
    self.arrays = {
        "observations": np.zeros((capacity, observation_dim), np.float32),
        "actions": np.zeros((capacity, action_dim), np.float32),
        "rewards": np.zeros(capacity, np.float32),
        "terminals": np.zeros(capacity, bool),
        "timeouts": np.zeros(capacity, bool),
        "next_observations": np.zeros((capacity, observation_dim), np.float32),
        "env_index": np.zeros(capacity, np.int32),
    }
    if qpos_dim is not None:
      self.arrays["infos/qpos"] = np.zeros((capacity, qpos_dim), np.float32)
      self.arrays["infos/qvel"] = np.zeros((capacity, qvel_dim), np.float32)

  def add(self, rows: dict[str, np.ndarray]) -> None:
    count = len(rows["rewards"])
    if self.size + count > self.capacity:
      raise ValueError(f"replay buffer of {self.capacity} rows is full")
    for key, array in self.arrays.items():
      array[self.size:self.size + count] = rows[key]
    self.size += count

  def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Transitions:
    """Uniform draws with replacement, as [*shape, ...] host arrays."""
    index = rng.integers(0, self.size, shape)
    return Transitions(
        observations=self.arrays["observations"][index],
        actions=self.arrays["actions"][index],
        rewards=self.arrays["rewards"][index],
        next_observations=self.arrays["next_observations"][index],
        dones=self.arrays["terminals"][index].astype(np.float32),
    )

  def rows(self, stop: Optional[int] = None) -> dict[str, np.ndarray]:
    """The first `stop` rows (all by default), as views."""
    stop = self.size if stop is None else stop
    return {key: array[:stop] for key, array in self.arrays.items()}


def evaluate(env_id: str, policy: BatchPolicy, episodes: int, seed: int) -> np.ndarray:
  """Undiscounted returns of `episodes` episodes run side by side, one per sub-env."""
  envs = make_vector_env(env_id, episodes)
  try:
    observations, _ = envs.reset(seed=seed)
    returns = np.zeros(episodes)
    running = np.ones(episodes, bool)
    while running.any():
      observations, rewards, terminated, truncated, _ = envs.step(policy(observations))
      returns += np.where(running, rewards, 0.0)
      running &= ~(terminated | truncated)
  finally:
    envs.close()
  return returns


def random_batch_policy(action_space: gym.spaces.Box, seed: int) -> BatchPolicy:
  """Uniform over the action box for each row, as D4RL's random policy."""
  rng = np.random.default_rng(seed)
  return lambda observations: rng.uniform(
      action_space.low, action_space.high, (len(observations),) + action_space.shape).astype(np.float32)


# ---------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Evaluation:
  step: int  # environment steps (= buffer rows) behind the evaluated policy
  return_mean: float
  return_std: float
  checkpoint: Optional[str]  # where this policy was saved, if it was
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # the last update chunk's means


@dataclasses.dataclass
class TrainResult:
  config: SACConfig
  env_id: str
  state: SACState
  buffer: ReplayBuffer
  evaluations: list[Evaluation]
  crossings: dict[float, Evaluation]  # threshold -> first evaluation reaching it
  best: Evaluation
  seconds: float

  def policy(self) -> PolicyCheckpoint:
    """The final policy."""
    return PolicyCheckpoint(
        module=policy_module(self.buffer.arrays["actions"].shape[1], self.config.hidden_dims),
        params=self.state.policy.params, env_id=self.env_id,
        observation_dim=self.buffer.arrays["observations"].shape[1],
        step=self.buffer.size, evaluated_return=self.evaluations[-1].return_mean)

  def record(self) -> dict:
    """What the run reached, as JSON-ready data."""
    return {
        "env_id": self.env_id,
        "config": dataclasses.asdict(self.config),
        "seconds": self.seconds,
        "evaluations": [dataclasses.asdict(e) for e in self.evaluations],
        "crossings": {f"{threshold:g}": dataclasses.asdict(e) for threshold, e in self.crossings.items()},
        "best": dataclasses.asdict(self.best),
    }


class Collector:
  """Steps a next-step-autoreset vector env and stores only real transitions.

  With next-step autoreset, a sub-env whose episode ended last step spends
  the next step resetting: its output is the new first observation with
  reward 0, no transition, so that row is skipped.
  """

  def __init__(self, envs: gym.vector.SyncVectorEnv, seed: int):
    self.envs = envs
    self.observations, _ = envs.reset(seed=seed)
    self.needs_reset = np.zeros(envs.num_envs, bool)
    self.episode_returns = np.zeros(envs.num_envs)

  def collect(self, buffer: ReplayBuffer, steps: int, policy: BatchPolicy) -> list[float]:
    """Steps until `steps` more rows are stored; returns the returns of the episodes that ended."""
    finished_returns = []
    stop = buffer.size + steps
    while buffer.size < stop:
      actions = np.asarray(policy(self.observations), np.float32)
      state = mujoco_state(self.envs)
      next_observations, rewards, terminated, truncated, _ = self.envs.step(actions)
      real = np.flatnonzero(~self.needs_reset)
      rows = {
          "observations": self.observations[real], "actions": actions[real], "rewards": rewards[real],
          # A terminal is a terminal even on the time limit's last step: it must not be dropped as a cut.
          "terminals": terminated[real], "timeouts": truncated[real] & ~terminated[real],
          "next_observations": next_observations[real], "env_index": real,
      }
      if state is not None:
        rows["infos/qpos"], rows["infos/qvel"] = state[0][real], state[1][real]
      buffer.add(rows)
      self.episode_returns[real] += rewards[real]
      ended = real[(terminated | truncated)[real]]
      finished_returns.extend(self.episode_returns[ended].tolist())
      self.episode_returns[ended] = 0.0
      self.needs_reset = terminated | truncated
      self.observations = next_observations
    return finished_returns


def buffer_for(envs: gym.vector.SyncVectorEnv, capacity: int) -> ReplayBuffer:
  """An empty buffer with the env's sizes, with room for qpos/qvel where the env is MuJoCo."""
  state = mujoco_state(envs)
  return ReplayBuffer(capacity, envs.single_observation_space.shape[0], envs.single_action_space.shape[0],
                      *((state[0].shape[1], state[1].shape[1]) if state else ()))


def policy_acting(act, params, key: jax.Array) -> BatchPolicy:
  """A host policy for fixed params that folds a fresh counter into `key` on every call."""
  counter = iter(range(2**31 - 1))
  return lambda observations: np.asarray(act(params, jnp.asarray(observations, jnp.float32), key, next(counter)))


def train(env_id: str, config: SACConfig, checkpoint_dir: Optional[str] = None,
          thresholds: Sequence[float] = (), keep_every_evaluation: bool = False,
          save_replay_buffer: bool = False, progress: bool = True, description: str = "SAC") -> TrainResult:
  """Trains SAC for `config.total_steps` environment steps, evaluating every `config.eval_every`.

  With a `checkpoint_dir`, saves the policy there the first time an
  evaluation reaches each of `thresholds` (`policy_return_<t>.msgpack`),
  at every evaluation if `keep_every_evaluation` (`policy_step_<n>.msgpack`),
  whenever the evaluated return is the best so far (`policy_best.msgpack`)
  and at the end (`policy_final.msgpack`); then the buffer's rows
  (`replay.npz`) if `save_replay_buffer`, and last `run.json`, what the run
  reached: its presence marks a finished run.
  """
  config.validate()
  start_time = time.perf_counter()
  envs = make_vector_env(env_id, config.num_envs)
  observation_dim = envs.single_observation_space.shape[0]
  action_dim = envs.single_action_space.shape[0]
  buffer = buffer_for(envs, config.total_steps + config.num_envs)
  init_key, act_key, update_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  state = init_state(init_key, observation_dim, action_dim, config)
  module = policy_module(action_dim, config.hidden_dims)
  act = make_act(module, deterministic=False)
  eval_act = make_act(module, deterministic=config.deterministic_eval)
  train_chunk = make_train_chunk(config, target_entropy=-float(action_dim))
  rng = np.random.default_rng(config.seed)
  if checkpoint_dir:
    os.makedirs(checkpoint_dir, exist_ok=True)

  def checkpoint_at(step, evaluated_return):
    return PolicyCheckpoint(module, state.policy.params, env_id, observation_dim, step, evaluated_return)

  def save(name, step, evaluated_return):
    if not checkpoint_dir:
      return None
    path = os.path.join(checkpoint_dir, name)
    save_policy(path, checkpoint_at(step, evaluated_return))
    return path

  evaluations, crossings, best = [], {}, None
  pending_thresholds = sorted(thresholds)
  collector = Collector(envs, config.seed)
  random_policy = random_batch_policy(envs.single_action_space, config.seed)
  chunk_index, next_eval = 0, config.eval_every
  last_train_return, metrics = float("nan"), {}
  bar = tqdm.tqdm(total=config.total_steps, desc=description, unit="step", disable=not progress)
  try:
    while buffer.size < config.total_steps:
      steps = min(config.chunk_steps, config.total_steps - buffer.size)
      before = buffer.size
      if buffer.size < config.start_steps:
        policy = random_policy
      else:
        policy = policy_acting(act, state.policy.params, jax.random.fold_in(act_key, chunk_index))
      finished = collector.collect(buffer, steps, policy)
      if finished:
        last_train_return = float(np.mean(finished))
      if buffer.size >= config.start_steps:
        batches = jax.device_put(buffer.sample(rng, (config.chunk_steps, config.batch_size)))
        state, metrics = train_chunk(state, batches, jax.random.fold_in(update_key, chunk_index))
        chunk_index += 1
      bar.update(buffer.size - before)
      if buffer.size >= next_eval or buffer.size >= config.total_steps:
        while next_eval <= buffer.size:
          next_eval += config.eval_every
        eval_seed = config.seed + 1_000_003 * (len(evaluations) + 1)
        returns = evaluate(env_id, policy_acting(eval_act, state.policy.params, jax.random.PRNGKey(eval_seed)),
                           config.eval_episodes, eval_seed)
        step, mean_return = buffer.size, float(returns.mean())
        name = f"policy_step_{step:09d}.msgpack" if keep_every_evaluation else None
        evaluation = Evaluation(step, mean_return, float(returns.std()),
                                save(name, step, mean_return) if name else None,
                                {key: float(value) for key, value in metrics.items()})
        evaluations.append(evaluation)
        while pending_thresholds and mean_return >= pending_thresholds[0]:
          threshold = pending_thresholds.pop(0)
          path = save(f"policy_return_{threshold:g}.msgpack", step, mean_return)
          crossings[threshold] = dataclasses.replace(evaluation, checkpoint=path or evaluation.checkpoint)
        if best is None or mean_return > best.return_mean:
          best = dataclasses.replace(evaluation, checkpoint=save("policy_best.msgpack", step, mean_return))
      bar.set_postfix(eval_return=f"{evaluations[-1].return_mean:.1f}" if evaluations else "-",
                      train_return=f"{last_train_return:.1f}",
                      temperature=f"{float(metrics['temperature']):.3f}" if metrics else "-")
  finally:
    bar.close()
    envs.close()
  save("policy_final.msgpack", buffer.size, evaluations[-1].return_mean)
  result = TrainResult(config, env_id, state, buffer, evaluations, crossings, best,
                       time.perf_counter() - start_time)
  if checkpoint_dir:
    if save_replay_buffer:
      save_rows(os.path.join(checkpoint_dir, REPLAY_FILE), buffer.rows())
    write_atomically(os.path.join(checkpoint_dir, RUN_FILE), json.dumps(result.record(), indent=1).encode())
  return result


def save_rows(path: str, rows: dict[str, np.ndarray]) -> None:
  """Replay rows as an uncompressed .npz, renamed into place once complete."""
  with atomic_path(path, suffix=".npz") as partial:
    np.savez(partial, **rows)


def load_rows(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as rows:
    return {key: rows[key] for key in rows.files}
