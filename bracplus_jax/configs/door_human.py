"""Adroit door from human demonstrations (D4RL: door-human-v1), with MMD as the paper uses."""

from bracplus_jax.configs import base


def get_config():
  return base.adroit_task("door")
