"""Environments by id: gymnasium's, or the original OpenAI gym's (and D4RL's) as `gym:<id>`.

`gym:<id>` makes `<id>` with the `gym` package and converts it to gymnasium's
API with Farama's `shimmy`: gym >= 0.26 through `GymV26CompatibilityV0`, older
gym (done flags, `seed()`) through `GymV21CompatibilityV0`. When `<id>` is not
registered and `d4rl` is installed, d4rl is imported first, so its ids
(`gym:hopper-medium-v2`, `gym:pen-human-v1`) work too. Both packages are
optional: `pip install "bracplus-jax[gym]"` or `"bracplus-jax[d4rl]"`. Adroit's tasks
(`AdroitHand*`) come from gymnasium-robotics, `pip install "bracplus-jax[adroit]"`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Optional

import gymnasium

from bracplus_jax import extras
from bracplus_jax.errors import InputError

GYM_PREFIX = "gym:"
ADROIT_PREFIX = "AdroitHand"  # gymnasium-robotics' Adroit tasks


def is_gym_id(env_id: str) -> bool:
  return env_id.startswith(GYM_PREFIX)


def task_name(env_id: str) -> str:
  """The id without its `gym:` prefix."""
  return env_id.removeprefix(GYM_PREFIX)


def _gym_version(gym) -> tuple[int, int]:
  major, minor = (gym.__version__.split(".") + ["0"])[:2]
  return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _import_gym(env_id: str):
  missing = [name for name in ("gym", "shimmy") if importlib.util.find_spec(name) is None]
  if missing:
    raise InputError(
        f"environment '{env_id}' needs the optional package(s) {', '.join(missing)}: "
        f"{extras.install_hint('gym')} (or {extras.install_hint('d4rl')} for D4RL's tasks)")
  return importlib.import_module("gym")


def _registered_in_gym(gym, name: str) -> bool:
  try:
    gym.spec(name)
    return True
  except gym.error.Error:
    return False


def _make_gym_env(env_id: str, max_episode_steps: Optional[int], **kwargs) -> gymnasium.Env:
  gym = _import_gym(env_id)
  compatibility = importlib.import_module("shimmy.openai_gym_compatibility")  # binds to this gym

  name = task_name(env_id)
  if not _registered_in_gym(gym, name) and importlib.util.find_spec("d4rl") is not None:
    try:
      importlib.import_module("d4rl")  # registers D4RL's ids with gym
    except Exception as error:  # d4rl's imports (mujoco_py, ...) fail in many ways
      raise InputError(f"environment '{env_id}': importing d4rl failed ({type(error).__name__}: "
                       f"{error})") from error
  if not _registered_in_gym(gym, name):
    raise InputError(f"environment '{env_id}': gym {gym.__version__} does not know '{name}'"
                     + ("" if importlib.util.find_spec("d4rl") else " (D4RL's ids need `d4rl`)"))
  make_kwargs = dict(kwargs)
  if max_episode_steps is not None:
    make_kwargs["max_episode_steps"] = max_episode_steps
  if _gym_version(gym) >= (0, 26):
    # gym's env checker calls np.bool8, which numpy 2 removed; the env itself is unaffected.
    make_kwargs["disable_env_checker"] = True
    return compatibility.GymV26CompatibilityV0(name, make_kwargs=make_kwargs)
  render_mode = make_kwargs.pop("render_mode", None)
  for size in ("width", "height"):  # old gym envs take the frame size in render()
    make_kwargs.pop(size, None)
  return compatibility.GymV21CompatibilityV0(name, make_kwargs=make_kwargs, render_mode=render_mode)


def make(env_id: str, max_episode_steps: Optional[int] = None, **kwargs) -> gymnasium.Env:
  """A gymnasium env for a gymnasium id or a `gym:<id>`; InputError when no package knows the id."""
  if is_gym_id(env_id):
    return _make_gym_env(env_id, max_episode_steps, **kwargs)
  if env_id.startswith(ADROIT_PREFIX):  # registered with gymnasium by importing the package
    extras.import_optional("gymnasium_robotics", f"environment '{env_id}'")
  try:
    return gymnasium.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
  except gymnasium.error.Error as error:
    raise InputError(f"environment '{env_id}' is unknown to gymnasium ({error})") from error


def spaces(env_id: str) -> tuple[gymnasium.Space, gymnasium.Space]:
  """(observation space, action space) of `env_id`."""
  env = make(env_id)
  try:
    return env.observation_space, env.action_space
  finally:
    env.close()
