"""bracplus ablate: the paper's ablations (Fig. 2), one full run per variant.

  bracplus ablate --config=hopper_local --variants=kl,no_gp,global_alpha
      [--seeds=4] [--workdir=DIR] [--config.epochs=20 ...]

Every variant is a preset applied to the task config (after its command-line
overrides, so a preset wins on the fields it sets) and trained by the same code
as `bracplus train`, its seeds vmapped in one process. All runs sit in one parent
directory, DIR/<variant>/, which is never overwritten (a taken DIR gets a fresh
name, as a run directory does). After each run, `final_diagnostics` writes the
end-of-run quantities the figures need into the run's diagnostics.npz, and at
the end the variants' final returns and normalised scores (mean +- std over
seeds) are printed side by side and written to DIR/ablation.md and
DIR/ablation.json. `bracplus report DIR --out=FIGURES` draws them.

Variants (docs/paper.md, "Variants the paper compares"):
  kl            the paper's default: analytical KL bound, alpha(s), hard gradient penalty
  mmd           sampled MMD with a Laplacian kernel instead of the KL bound
  global_alpha  one global alpha instead of the state-wise alpha(s)
  no_gp         no gradient penalty in policy evaluation
  soft_gp       the released code's soft gradient-penalty weighting
  released      every released-code choice (bracplus_jax.configs.base.use_released_code_choices),
                including its batch size and 2 x 256 networks
  bc            behaviour cloning with the same policy network and evaluation: the baseline
                (no start-up phases; no diagnostics, which are about the critic and KL)
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial
from typing import Any, Callable

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bracplus_jax import data, distributions, evaluate, experiment, learner, losses
from bracplus_jax import config as config_lib
from bracplus_jax.cli import define_config_flag, exits_cleanly_on_input_errors, refuse_arguments, run_command
from bracplus_jax.data.identity import run_versions
from bracplus_jax.errors import InputError
from bracplus_jax.files import atomic_write
from bracplus_jax.studies.outputs import markdown_table, mean_std
from bracplus_jax.studies.run_files import ABLATION_RESULTS, DIAGNOSTICS_FILE, result_row

# What --config's errors suggest (`bracplus_jax.cli.run_command`).
CONFIG_EXAMPLE = "hopper_local"

ABLATION_TABLE = "ablation.md"


def _set_algo(**fields) -> Callable[[ml_collections.ConfigDict], None]:
  def apply(config: ml_collections.ConfigDict) -> None:
    for name, value in fields.items():
      config.algo[name] = value
  return apply


def _set_method(method: str) -> Callable[[ml_collections.ConfigDict], None]:
  def apply(config: ml_collections.ConfigDict) -> None:
    config.method = method
  return apply


def _released(config: ml_collections.ConfigDict) -> None:
  from bracplus_jax.configs import base
  base.use_released_code_choices(config)


# Each variant sets the fields that define it, so `kl` is the KL bound even on a task whose
# file chooses MMD (Adroit).
VARIANTS: dict[str, Callable[[ml_collections.ConfigDict], None]] = {
    "kl": _set_algo(divergence="kl"),
    "mmd": _set_algo(divergence="mmd"),
    "global_alpha": _set_algo(alpha="global"),
    "no_gp": _set_algo(gp_weighting="off"),
    "soft_gp": _set_algo(gp_weighting="soft"),
    "released": _released,
    "bc": _set_method("bc"),
}


def parse_variants(text: str) -> list[str]:
  """'kl,mmd' -> ['kl', 'mmd']; an unknown, repeated or missing name is one InputError."""
  names = [name.strip() for name in text.split(",") if name.strip()]
  known = ", ".join(VARIANTS)
  if not names:
    raise InputError(f"--variants: none given; expected a comma-separated list of: {known}")
  for name in names:
    if name not in VARIANTS:
      raise InputError(f"--variants: unknown variant '{name}'; known variants: {known}")
  repeated = sorted({name for name in names if names.count(name) > 1})
  if repeated:
    raise InputError(f"--variants: {', '.join(repeated)} given twice; each variant runs once")
  return names


def variant_config(config: ml_collections.ConfigDict, variant: str,
                   num_seeds: int) -> ml_collections.ConfigDict:
  """A copy of `config` with the variant's preset and `num_seeds` seeds; `config` is untouched."""
  config = ml_collections.ConfigDict(config.to_dict())
  VARIANTS[variant](config)
  config.num_seeds = num_seeds
  return config


# ---------------------------------------------------------------------------
# End-of-run diagnostics (Fig. 3 and Fig. 6)
# ---------------------------------------------------------------------------


def _action_gradient_norms(algorithm, critic_params, observations, actions) -> jax.Array:
  """||grad_a Q_j(s, a)|| averaged over the Q heads, per state: [N]."""
  critic = partial(algorithm.critic.apply, critic_params)
  gradients = losses.action_gradients(critic, observations, actions)  # [heads, N, act]
  return jnp.mean(jnp.linalg.norm(gradients, axis=-1), axis=0)


def seed_diagnostics(algorithm, state, observations: jax.Array, key: jax.Array,
                     chunk_size: int = 4096) -> dict[str, jax.Array]:
  """One seed's end-of-run quantities over every dataset state (see `final_diagnostics`)."""
  divergence_key, gradient_key = jax.random.split(key)
  divergence = algorithm.dataset_divergence(state, observations, divergence_key, chunk_size)

  def gradient_norms(chunk, chunk_key):
    policy_key, uniform_key = jax.random.split(chunk_key)
    mean, std = algorithm.policy.apply(state.policy.params, chunk)
    policy_actions, _ = distributions.sample_tanh_gaussian(policy_key, mean, std)
    uniform_actions = jax.random.uniform(
        uniform_key, policy_actions.shape, policy_actions.dtype, minval=-1.0, maxval=1.0)
    return jnp.stack([
        _action_gradient_norms(algorithm, state.critic.params, chunk, policy_actions),
        _action_gradient_norms(algorithm, state.critic.params, chunk, uniform_actions)], axis=-1)

  norms = learner.map_chunks(gradient_norms, observations, chunk_size, gradient_key)
  return {"divergence": divergence, "policy_action_gradient_norm": norms[:, 0],
          "uniform_action_gradient_norm": norms[:, 1], "kl_threshold": state.kl_threshold,
          "gp_threshold": state.gp_threshold}


def final_diagnostics(run_dir: str, seed: int = 0) -> str:
  """Writes run_dir/diagnostics.npz from the run's last checkpoint and returns its path.

  Arrays, one row per seed of the run (N = every state of the dataset):
    divergence [seeds, N]: KL(s) (the KL bound, or the MMD for an MMD run) of the
      final policy at every dataset state, as `BRACPlus.dataset_divergence` computes it;
    kl_threshold [seeds]: eps_KL; gp_threshold [seeds]: eps_GP after the last epoch;
    policy_action_gradient_norm [seeds, N]: ||grad_a Q(s, a)|| at one action a ~ pi(.|s)
      of the final policy per state, averaged over the two Q heads;
    ood [seeds, N]: KL(s) > eps_GP. The out-of-distribution actions of Fig. 6 are the
      policy's actions at these states: exactly where Eq. 10's penalty acts;
    uniform_action_gradient_norm [seeds, N]: the same norm at one uniform action in
      [-1, 1]^act per state, a probe that does not depend on the policy (though for data
      collected by a uniform policy those actions are in distribution);
    divergence_name []: the run's algo.divergence, kl or mmd.
  An existing diagnostics.npz is never overwritten.
  """
  path = os.path.join(run_dir, DIAGNOSTICS_FILE)
  if os.path.exists(path):
    raise InputError(f"{path} exists; it is never overwritten")
  config, algorithm, state = evaluate.restore_run(run_dir)
  dataset = data.load_dataset(config.dataset, scale_rewards=config.scale_rewards,
                              clip_actions=config.clip_actions, env_id=config.env, progress=False)
  observations = dataset.transitions.observations
  keys = jax.random.split(jax.random.key(seed), config.num_seeds)
  over_seeds = jax.jit(jax.vmap(partial(seed_diagnostics, algorithm), in_axes=(0, None, 0)))
  arrays = {name: np.asarray(value) for name, value in over_seeds(state, observations, keys).items()}
  arrays["ood"] = arrays["divergence"] > arrays["gp_threshold"][:, None]
  arrays["divergence_name"] = np.asarray(config.algo.divergence)
  with open(path, "xb") as file:
    np.savez_compressed(file, **arrays)
  return path


# ---------------------------------------------------------------------------
# The ablation
# ---------------------------------------------------------------------------


def ablation_table(rows: list[dict[str, Any]]) -> str:
  """Final return and normalised score, mean +- std over seeds, one line per variant."""
  return markdown_table(
      ["variant", "seeds", "final return", "normalised score"],
      [[row["variant"], str(row["seeds"]), mean_std(row, "return"),
        mean_std(row, "normalized_score")] for row in rows])


def run_ablation(config: ml_collections.ConfigDict, variants: list[str], num_seeds: int,
                 workdir: str, progress: bool = True) -> str:
  """Trains every variant into workdir/<variant>/ and writes the ablation's table; returns
  the parent directory (workdir, or a fresh name if workdir is taken)."""
  if num_seeds < 1:
    raise InputError(f"--seeds: {num_seeds}; expected a positive number of seeds")
  configs = {name: variant_config(config, name, num_seeds) for name in variants}
  for name, variant in configs.items():  # every variant's config is checked before any training
    try:
      config_lib.validate(variant)
    except InputError as error:
      raise InputError(f"variant {name}: {error}") from error
  parent = experiment.run_directory(workdir, resume=False)
  print(f"ablation directory: {parent}")
  rows = []
  for name, variant in configs.items():
    print(f"\n=== variant {name} ({num_seeds} seeds) ===", flush=True)
    summary = experiment.run(variant, os.path.join(parent, name), progress=progress)
    if variant.method != "bc":
      print(f"diagnostics: {final_diagnostics(summary['run_dir'])}")
    rows.append(result_row(name, summary))
  table = ablation_table(rows)
  with atomic_write(os.path.join(parent, ABLATION_TABLE), overwrite=False) as file:
    file.write(table)
  with atomic_write(os.path.join(parent, ABLATION_RESULTS), overwrite=False) as file:
    json.dump({"task": config.name, "dataset": config.dataset, "env": config.env,
               "variants": rows, "versions": run_versions()}, file, indent=2)
  print("\n" + table)
  print(f"table: {os.path.join(parent, ABLATION_TABLE)}")
  return parent


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def define_flags() -> None:
  """Only when run as a program: other modules define flags of the same names."""
  define_config_flag(None, "A packaged task config's name (hopper_local, hopper_local:mixed, "
                     "hopper_mixed, ...) or the path to a config file with get_config().")
  flags.DEFINE_string("variants", "kl,mmd", f"Comma-separated variants, of: {', '.join(VARIANTS)}.")
  flags.DEFINE_integer("seeds", 4, "Seeds per variant, vmapped in one process (the paper: 4).")
  flags.DEFINE_string("workdir", None, "The parent directory of the variants' runs (default "
                      "runs/ablation-<name>-<time>); a taken one is never overwritten.")


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  refuse_arguments(argv)
  variants = parse_variants(flags.FLAGS.variants)
  if not flags.FLAGS["config"].present:
    raise InputError(f"--config: missing; expected a packaged task config such as --config={CONFIG_EXAMPLE} "
                     "or the path to a config file of your own")
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join(
      "runs", f"ablation-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
  run_ablation(config, variants, flags.FLAGS.seeds, workdir)


if __name__ == "__main__":
  run_command(sys.modules[__name__])
