"""Datasets made here, in D4RL's format: a policy rolled out, or D4RL's recipes (random,
medium, mixed, expert, medium_expert) with behaviour policies trained by SAC.

  collect.py  the collector: rollouts, the recipes and their files; `bracplus collect`
  sac.py      online soft actor-critic, the recipes' behaviour policies, and its policy files
  family.py   a family's manifest (each file's figures and checksum, what made it) and the
              check of another folder against one

It may import data/, the modules every wing shares (errors, cli, envs) and the algorithm's
building blocks (networks, distributions, random_bits), nothing above them: SAC has its own
small losses. The run machinery (experiment.py makes a missing dataset) and the studies
import it.
"""
