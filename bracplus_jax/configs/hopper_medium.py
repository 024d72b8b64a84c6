"""hopper medium (D4RL: hopper-medium-v2), evaluated in gymnasium's MuJoCo v5 task."""

from bracplus_jax.configs import base


def get_config():
  return base.gym_task("hopper", "medium")
