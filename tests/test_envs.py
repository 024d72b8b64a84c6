"""`gym:<id>` environments: the original gym API (v21 and v26) evaluates like gymnasium's own env."""

import importlib
import pathlib
import sys
import types

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bracplus_jax.configs import base  # noqa: E402

from bracplus_jax import envs, evaluation, experiment, networks  # noqa: E402
from bracplus_jax.collection import collect  # noqa: E402
from bracplus_jax.data import scores  # noqa: E402
from bracplus_jax.errors import InputError  # noqa: E402

PENDULUM_OBS, PENDULUM_ACT = 3, 1


@pytest.fixture(scope="module")
def pendulum_policy():
  policy = networks.TanhGaussianPolicy(PENDULUM_ACT, (16, 16))
  keys = jax.random.split(jax.random.key(3), 2)
  params = jax.jit(jax.vmap(lambda k: policy.init(k, jnp.zeros((1, PENDULUM_OBS)))))(keys)
  return policy, params


def returns_in(env_id, policy, params, episodes=2, max_episode_steps=60):
  return evaluation.evaluate_episodes(policy, params, env_id, episodes, seed=11,
                                      max_episode_steps=max_episode_steps)


def test_gym_v26_env_evaluates_like_the_gymnasium_env(pendulum_policy):
  pytest.importorskip("gym")
  pytest.importorskip("shimmy")
  policy, params = pendulum_policy
  expected = returns_in("Pendulum-v1", policy, params)
  got = returns_in("gym:Pendulum-v1", policy, params)
  np.testing.assert_allclose(got.returns, expected.returns, rtol=1e-6)
  np.testing.assert_array_equal(got.lengths, expected.lengths)
  assert (got.lengths == 60).all()  # max_episode_steps reached the gym env's time limit


class OldApiPendulum:
  """gym 0.21's API over gymnasium's Pendulum: seed(), reset() -> obs, step() -> 4-tuple."""

  def __init__(self, max_episode_steps=None):
    self.env = gymnasium.make("Pendulum-v1", max_episode_steps=max_episode_steps)
    self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
    self.metadata = {"render_modes": []}
    self.next_seed = None

  def seed(self, seed=None):
    self.next_seed = seed

  def reset(self):
    observation, _ = self.env.reset(seed=self.next_seed)
    self.next_seed = None
    return observation

  def step(self, action):
    observation, reward, terminated, truncated, info = self.env.step(action)
    info = dict(info, **({"TimeLimit.truncated": True} if truncated and not terminated else {}))
    return observation, reward, terminated or truncated, info

  def close(self):
    self.env.close()


@pytest.fixture
def old_gym(monkeypatch):
  """A gym 0.21 stand-in that knows one id; shimmy is re-imported against it."""
  shimmy = pytest.importorskip("shimmy")
  del shimmy
  fake = types.ModuleType("gym")
  fake.__version__ = "0.21.0"
  fake.spaces = gymnasium.spaces  # shimmy converts spaces by isinstance checks against gym.spaces
  fake.wrappers = types.ModuleType("gym.wrappers")
  fake.error = types.SimpleNamespace(Error=gymnasium.error.Error)

  def spec(name):
    if name != "OldPendulum-v0":
      raise gymnasium.error.Error(f"No registered env with id: {name}")
    return name

  fake.spec = spec
  fake.make = lambda name, **kwargs: OldApiPendulum(**kwargs)
  monkeypatch.setitem(sys.modules, "gym", fake)
  monkeypatch.setitem(sys.modules, "gym.wrappers", fake.wrappers)
  monkeypatch.delitem(sys.modules, "shimmy.openai_gym_compatibility", raising=False)
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",  # the stand-in has no module spec
                      lambda name, *a: object() if name == "gym" else real_find_spec(name, *a))
  yield fake
  sys.modules.pop("shimmy.openai_gym_compatibility", None)  # drop the copy bound to the stand-in


def test_gym_v21_env_evaluates_like_the_gymnasium_env(pendulum_policy, old_gym):
  policy, params = pendulum_policy
  got = returns_in("gym:OldPendulum-v0", policy, params)
  expected = returns_in("Pendulum-v1", policy, params)
  np.testing.assert_allclose(got.returns, expected.returns, rtol=1e-6)
  np.testing.assert_array_equal(got.lengths, expected.lengths)


def test_unknown_gym_id_is_named(old_gym):
  with pytest.raises(InputError, match="gym:NoSuchEnv-v0.*does not know 'NoSuchEnv-v0'"):
    envs.make("gym:NoSuchEnv-v0")


def test_missing_gym_package_says_what_to_install(monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "gym" else real_find_spec(name, *a))
  with pytest.raises(InputError, match=r"gym:Hopper-v4.*optional package\(s\) gym.*pip install \"bracplus-jax\[gym\]\""):
    envs.make("gym:Hopper-v4")


def test_unknown_gymnasium_id_is_named():
  with pytest.raises(InputError, match="Hoppper-v5.*unknown to gymnasium"):
    envs.make("Hoppper-v5")


def test_d4rl_references_follow_gym_ids():
  assert scores.d4rl_reference_returns_for_env("gym:hopper-medium-v2") == scores.D4RL_REFERENCE_RETURNS["hopper"]
  assert scores.d4rl_reference_returns_for_env("gym:Walker2d-v3") == scores.D4RL_REFERENCE_RETURNS["walker2d"]
  assert scores.d4rl_reference_returns_for_env("Hopper-v5") == scores.D4RL_REFERENCE_RETURNS["hopper"]
  assert scores.d4rl_reference_returns_for_env("AdroitHandPen-v1") == scores.D4RL_REFERENCE_RETURNS["pen"]


def test_a_run_evaluates_in_a_gym_env(tmp_path):
  pytest.importorskip("gym")
  pytest.importorskip("shimmy")
  path = str(tmp_path / "mountain_car.hdf5")
  collect.collect("MountainCarContinuous-v0", "random", 400, path, seed=0, progress=False)
  config = base.get_config()
  config.dataset, config.env = f"hdf5:{path}", "gym:MountainCarContinuous-v0"
  for name in ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims"):
    config.algo[name] = (8, 8)
  for name, value in {"behavior_steps": 10, "policy_init_steps": 10, "critic_init_steps": 10,
                      "epochs": 1, "steps_per_epoch": 10, "batch_size": 16, "eval_episodes": 1,
                      "eval_every": 1}.items():
    config[name] = value
  config.wandb.mode = "disabled"
  summary = experiment.run(config, str(tmp_path / "run"), progress=False)
  assert len(summary["return"]) == 1 and np.isfinite(summary["return"]).all()
  with pytest.raises(InputError, match="config.env: environment 'gym:NoSuch-v0'"):
    experiment.check_environment("gym:NoSuch-v0")
