"""BRAC+ offline reinforcement learning in JAX.

The package is in wings, and imports run one way, from a wing to those below it:
studies/ -> the run machinery (experiment, evaluate, evaluation, checkpoints, run_log) ->
the algorithm (train, learner, losses, config, sweep; networks, distributions and
random_bits its building blocks) -> data/; collection/ makes datasets on the building
blocks alone, and errors, cli and envs serve every wing. The README's Layout section has
the whole map; tests/test_layout.py checks it. This module imports nothing.
"""
