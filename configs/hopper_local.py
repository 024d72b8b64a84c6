"""BRAC+ on Hopper-v5 data made on this machine: runs end to end in minutes, with no download.

The first run collects the dataset with the collector (kept in $BRACPLUS_DATA,
reused by later runs). Networks are the released code's 2 x 256 and the step
counts are small, so that a 2-core CPU finishes in under 10 minutes; the
algorithm is the paper's in every other respect.
"""

import os

from configs import base


def get_config():
  config = base.get_config()
  config.name = "hopper_local"
  data_dir = os.environ.get("BRACPLUS_DATA") or os.path.join(
      os.path.expanduser("~"), ".cache", "bracplus_jax")
  config.dataset = f"hdf5:{os.path.join(data_dir, 'generated', 'Hopper-v5_random.hdf5')}"
  config.env = "Hopper-v5"
  config.make_dataset.recipe = "random"
  config.make_dataset.steps = 100_000
  config.algo.kl_margin = 3.0  # the released code's margin for random data

  for name in ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims",
               "alpha_hidden_dims"):
    config.algo[name] = (256, 256)
  config.batch_size = 256
  config.behavior_steps = 4_000
  config.policy_init_steps = 1_500
  config.critic_init_steps = 1_500
  config.epochs = 8
  config.steps_per_epoch = 500
  config.algo.policy_lr = 1e-4
  config.eval_every = 4
  config.eval_episodes = 5
  config.checkpoint_every = 4
  return config
