"""walker2d random (D4RL: walker2d-random-v2), evaluated in gymnasium's MuJoCo v5 task."""

from bracplus_jax.configs import base


def get_config():
  return base.gym_task("walker2d", "random")
