"""The kinds of D4RL locomotion dataset, by the names the project gives them.

The collector makes one dataset of each kind (its recipes, `bracplus_jax.collection`), a
config names the kind to make when its dataset is missing, and bracplus_jax/configs/base.py sets the
released code's per-kind KL margins.
"""

# D4RL's random, medium, medium-replay, expert and medium-expert.
KINDS = ("random", "medium", "mixed", "expert", "medium_expert")
