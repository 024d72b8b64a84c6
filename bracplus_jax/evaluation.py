"""Evaluation of many seeds' policies in gymnasium MuJoCo environments (or `gym:<id>`, see envs).

All seeds and all their episodes run in ONE vector env of S * E copies, and
every step takes one compiled, seed-vmapped policy call for all of them.
Copy s * E + e is seed s's episode e; it is reset with seed `seed + s * E + e`.

Two ways to act (`policy_actions`):
  "deterministic"  tanh(mean), the policy's squashed mode (the paper).
  "best_of_q"      the released code's rule: draw `num_samples` pre-tanh
                   actions, clip them to mean +- std, squash, and take the one
                   with the highest mean over the two Q heads.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
from typing import Any, Optional

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from bracplus_jax import distributions, envs
from bracplus_jax.data import scores
from bracplus_jax.errors import InputError

MODES = ("deterministic", "best_of_q")
VECTORIZATIONS = ("sync", "async")

# GIF frame delays are whole hundredths of a second and viewers slow down
# anything under 20 ms, so GIFs keep every k-th frame to stay near this rate.
GIF_MAX_FPS = 30


# ---------------------------------------------------------------------------
# Acting
# ---------------------------------------------------------------------------


def _check_mode(mode: str, critic, critic_params) -> None:
  if mode not in MODES:
    raise InputError(f"evaluation mode {mode!r} is unknown; expected one of {', '.join(MODES)}")
  if mode == "best_of_q" and (critic is None or critic_params is None):
    raise InputError("evaluation mode 'best_of_q' needs the critic and its parameters")


def _best_of_q_actions(policy, critic, policy_params, critic_params, observations, key, num_samples):
  """One seed's best-of-Q actions for observations [E, obs] (released code's evaluation)."""
  mean, std = policy.apply(policy_params, observations)
  pre_tanh = distributions.sample_gaussian(key, mean, std, (num_samples,))
  candidates = jnp.tanh(jnp.clip(pre_tanh, mean - std, mean + std))  # [N, E, act]
  mean_q = critic.apply(critic_params, observations, candidates).mean(axis=0)  # [N, E]
  best = jnp.argmax(mean_q, axis=0)
  return jnp.take_along_axis(candidates, best[None, :, None], axis=0)[0]


def policy_actions(policy, policy_params, observations: jax.Array, key: jax.Array,
                   mode: str = "deterministic", critic=None, critic_params=None,
                   num_samples: int = 20) -> jax.Array:
  """Actions [S, E, act] in [-1, 1] for observations [S, E, obs].

  `policy_params` (and `critic_params` for "best_of_q") carry a leading seed
  axis S; seed s's networks act on observations[s]. Jittable with `policy`,
  `mode`, `critic` and `num_samples` static.
  """
  _check_mode(mode, critic, critic_params)
  if mode == "deterministic":
    def act(params, seed_observations):
      mean, _ = policy.apply(params, seed_observations)
      return distributions.deterministic_action(mean)

    return jax.vmap(act)(policy_params, observations)
  # fold_in, not split: seed s's key does not depend on how many seeds run.
  seed_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(observations.shape[0]))
  act = functools.partial(_best_of_q_actions, policy, critic, num_samples=num_samples)
  return jax.vmap(act)(policy_params, critic_params, observations, seed_keys)


_compiled_policy_actions = jax.jit(
    policy_actions, static_argnames=("policy", "mode", "critic", "num_samples"))


# ---------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------


def _policy_input_shape(policy_params) -> tuple[int, int]:
  """(seeds, observation size) read off the policy's first layer, [S, obs, hidden]."""
  try:
    first_kernel = policy_params["params"]["trunk"]["Dense_0"]["kernel"]
  except (KeyError, TypeError) as error:
    raise InputError("policy_params are not a TanhGaussianPolicy's parameters") from error
  if first_kernel.ndim != 3:
    raise InputError(
        f"policy_params need a leading seed axis: the first layer's kernel has shape "
        f"{tuple(first_kernel.shape)}, expected [seeds, observation size, width]")
  return first_kernel.shape[0], first_kernel.shape[1]


def check_env(env_id: str, observation_dim: int, action_dim: int) -> None:
  """InputError unless `env_id` (see `envs.make`) has these observation and action sizes."""
  observation_space, action_space = envs.spaces(env_id)
  if not isinstance(action_space, gym.spaces.Box) or not isinstance(observation_space, gym.spaces.Box):
    raise InputError(f"{env_id} needs Box observation and action spaces; it has "
                     f"{observation_space} and {action_space}")
  policy_shapes = ((observation_dim,), (action_dim,))
  env_shapes = (observation_space.shape, action_space.shape)
  if env_shapes != policy_shapes:
    raise InputError(
        f"{env_id} has observations of shape {env_shapes[0]} and actions of shape {env_shapes[1]}; "
        f"the policy takes observations of shape {policy_shapes[0]} and gives actions of shape "
        f"{policy_shapes[1]}")


def make_vector_env(env_id: str, num_envs: int, max_episode_steps: Optional[int] = None,
                    vectorization: str = "sync") -> gym.vector.VectorEnv:
  """`num_envs` copies of `env_id` that reset themselves on the step after an episode ends.

  "async" runs one process per copy; on a few cores its start-up and messaging
  cost more than MuJoCo's steps (benchmarks/evaluation.py), so "sync" is the default.
  """
  env_fns = [functools.partial(envs.make, env_id, max_episode_steps) for _ in range(num_envs)]
  # Pinned: the rollout below relies on next-step autoreset (gymnasium 1.x's default).
  autoreset_mode = gym.vector.AutoresetMode.NEXT_STEP
  if vectorization == "sync":
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=autoreset_mode)
  if vectorization == "async":
    # forkserver: forking a process that runs JAX's threads can deadlock.
    return gym.vector.AsyncVectorEnv(env_fns, context="forkserver", autoreset_mode=autoreset_mode)
  raise InputError(f"vectorization {vectorization!r} is unknown; expected one of "
                   f"{', '.join(VECTORIZATIONS)}")


# ---------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Episodes:
  """Each seed's evaluation episodes: undiscounted returns and lengths, both [S, E]; the
  discounted returns of the training rewards, sum_t gamma^t scale(r_t) [S, E], what the
  critic predicts at the first (state, action); and those first states [S, E, obs] and
  actions [S, E, act]."""

  returns: np.ndarray
  lengths: np.ndarray
  discounted_returns: np.ndarray
  initial_observations: np.ndarray
  initial_actions: np.ndarray


def evaluate_episodes(policy, policy_params, env_id: str, episodes: int, seed: int,
                      mode: str = "deterministic", critic=None, critic_params=None,
                      max_episode_steps: Optional[int] = None, num_samples: int = 20,
                      vectorization: str = "sync", discount: float = 0.99,
                      reward_scale=None) -> Episodes:
  """Runs `episodes` episodes of every seed's policy, each to its first termination or truncation.

  `policy_params` (and `critic_params`) have a leading seed axis S. Every env
  steps until all episodes are over; an env whose episode has ended is
  autoreset by gymnasium and keeps stepping, but nothing after its first
  episode is counted. `max_episode_steps` overrides the env's time limit.
  `vectorization` is "sync" (one process) or "async" (see `make_vector_env`).
  The discounted returns use `discount` and the rewards as `reward_scale`
  (`data.RewardScale`, or None for the env's own) maps them for training.
  """
  if episodes < 1:
    raise InputError(f"episodes must be at least 1; got {episodes}")
  _check_mode(mode, critic, critic_params)
  num_seeds, observation_dim = _policy_input_shape(policy_params)
  check_env(env_id, observation_dim, policy.action_dim)
  act = functools.partial(_compiled_policy_actions, policy, mode=mode, critic=critic,
                          num_samples=num_samples)
  num_envs = num_seeds * episodes
  returns = np.zeros(num_envs)
  discounted_returns = np.zeros(num_envs)
  lengths = np.zeros(num_envs, np.int64)
  running = np.ones(num_envs, bool)
  key = jax.random.key(seed)
  vector_env = make_vector_env(env_id, num_envs, max_episode_steps, vectorization)
  try:
    observations, _ = vector_env.reset(seed=[seed + index for index in range(num_envs)])
    step = 0
    while running.any():
      batch = np.asarray(observations, np.float32).reshape(num_seeds, episodes, observation_dim)
      actions = np.asarray(act(policy_params, batch, jax.random.fold_in(key, step),
                               critic_params=critic_params))
      if step == 0:
        initial_observations, initial_actions = batch, actions
      observations, rewards, terminations, truncations, _ = vector_env.step(actions.reshape(num_envs, -1))
      returns += np.where(running, rewards, 0.0)
      training_rewards = rewards if reward_scale is None else reward_scale.scale(rewards)
      discounted_returns += np.where(running, discount**step * training_rewards, 0.0)
      lengths += running
      running &= ~(terminations | truncations)
      step += 1
  finally:
    vector_env.close()
  return Episodes(returns.reshape(num_seeds, episodes), lengths.reshape(num_seeds, episodes),
                  discounted_returns.reshape(num_seeds, episodes), initial_observations, initial_actions)


def evaluate(policy, policy_params, env_id: str, episodes: int, seed: int,
             mode: str = "deterministic", critic=None, critic_params=None,
             max_episode_steps: Optional[int] = None, num_samples: int = 20,
             vectorization: str = "sync", video_path: Optional[str] = None) -> np.ndarray:
  """Undiscounted returns [S, episodes] of every seed's policy (see `evaluate_episodes`).

  With `video_path`, the first seed's first episode is also rendered there
  (see `record_episode`).
  """
  result = evaluate_episodes(policy, policy_params, env_id, episodes, seed, mode, critic,
                             critic_params, max_episode_steps, num_samples, vectorization)
  if video_path is not None:
    record_episode(policy, policy_params, env_id, video_path, seed, mode, critic, critic_params,
                   max_episode_steps, num_samples)
  return result.returns


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------


def summarize(returns, reference_returns: Optional[tuple[float, float]] = None) -> dict[str, Any]:
  """Per-seed mean return and its mean and std over seeds, for returns [S, E].

  With `reference_returns` = (random, expert), also D4RL's normalised score
  per seed and over seeds. Std is over seeds, ddof = 0 (np.std).
  """
  seed_returns = np.asarray(returns, np.float64).mean(axis=1)
  summary = {
      "return_per_seed": seed_returns.tolist(),
      "return_mean": float(seed_returns.mean()),
      "return_std": float(seed_returns.std()),
  }
  if reference_returns is not None:
    seed_scores = scores.normalized_score(seed_returns, *reference_returns)
    summary.update({
        "score_per_seed": seed_scores.tolist(),
        "score_mean": float(seed_scores.mean()),
        "score_std": float(seed_scores.std()),
    })
  return summary


# ---------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------


def mp4_writer_available() -> bool:
  """Whether imageio can write MP4 (it needs imageio-ffmpeg or PyAV)."""
  return any(importlib.util.find_spec(name) is not None for name in ("imageio_ffmpeg", "av"))


def _render_frame(env: gym.Env) -> np.ndarray:
  try:
    return env.render()
  except Exception as error:  # GL failures surface as several unrelated types
    backend = os.environ.get("MUJOCO_GL", "unset")
    raise InputError(
        f"rendering failed with MUJOCO_GL={backend} ({type(error).__name__}: {error}); on a "
        "headless machine set MUJOCO_GL=egl (GPU or Mesa EGL) or MUJOCO_GL=osmesa") from error


def video_file(path: str) -> str:
  """The file a video for `path` goes to: `path` itself, or a .gif beside it when MP4 cannot be written."""
  root, extension = os.path.splitext(path)
  if extension.lower() not in (".mp4", ".gif"):
    raise InputError(f"video path {path!r} must end in .mp4 or .gif")
  if extension.lower() == ".mp4" and not mp4_writer_available():
    return root + ".gif"
  return path


def _write_video(path: str, frames: list[np.ndarray], fps: float) -> None:
  import imageio.v3 as iio  # only videos need it

  if path.lower().endswith(".mp4"):
    iio.imwrite(path, np.stack(frames), fps=fps)
  else:
    stride = max(1, math.ceil(fps / GIF_MAX_FPS))
    iio.imwrite(path, np.stack(frames[::stride]), duration=1000.0 * stride / fps, loop=0)


def record_episode(policy, policy_params, env_id: str, path: str, seed: int,
                   mode: str = "deterministic", critic=None, critic_params=None,
                   max_episode_steps: Optional[int] = None, num_samples: int = 20,
                   width: int = 320, height: int = 320) -> str:
  """Renders the first seed's first evaluation episode to `path`; returns the file written.

  The episode starts from the same reset seed as `evaluate`'s copy 0, so in
  "deterministic" mode it is the episode behind returns[0, 0]. MP4 needs
  imageio-ffmpeg (or PyAV); without one, a GIF is written beside `path`
  instead. Rendering needs an OpenGL backend: MUJOCO_GL=egl or osmesa when
  there is no display.
  """
  output_path = video_file(path)
  _check_mode(mode, critic, critic_params)
  _, observation_dim = _policy_input_shape(policy_params)
  check_env(env_id, observation_dim, policy.action_dim)
  first_seed = functools.partial(jax.tree.map, lambda x: x[:1])
  policy_params = first_seed(policy_params)
  critic_params = None if critic_params is None else first_seed(critic_params)
  act = functools.partial(_compiled_policy_actions, policy, mode=mode, critic=critic,
                          num_samples=num_samples)
  key = jax.random.key(seed)
  env = envs.make(env_id, max_episode_steps, render_mode="rgb_array", width=width, height=height)
  try:
    observation, _ = env.reset(seed=seed)
    frames = [_render_frame(env)]
    step, done = 0, False
    while not done:
      batch = np.asarray(observation, np.float32).reshape(1, 1, observation_dim)
      action = act(policy_params, batch, jax.random.fold_in(key, step), critic_params=critic_params)
      observation, _, terminated, truncated, _ = env.step(np.asarray(action)[0, 0])
      frames.append(_render_frame(env))
      step, done = step + 1, terminated or truncated
    fps = env.metadata.get("render_fps", 30)
  finally:
    env.close()
  _write_video(output_path, frames, fps)
  return output_path
