"""halfcheetah mixed (D4RL: halfcheetah-medium-replay-v2), evaluated in gymnasium's MuJoCo v5 task."""

from bracplus_jax.configs import base


def get_config():
  return base.gym_task("halfcheetah", "mixed")
