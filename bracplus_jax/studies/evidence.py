"""bracplus evidence: BRAC+ against behaviour cloning, with confidence intervals.

  bracplus evidence --env=Hopper-v5 --recipes=mixed,medium,medium_expert --seeds=4
      [--workdir=runs/evidence-Hopper-v5] [--out=DIR] [--data_dir=DIR]
      [--config=evidence] [--config.epochs=12 ...]

For every recipe: makes the dataset if it is missing (the collector's D4RL
recipes, `bracplus collect`), then trains behaviour cloning and
BRAC+ on it with the seeds vmapped, by the same code as `bracplus train`, into
WORKDIR/<recipe>/bc and WORKDIR/<recipe>/brac_plus. Running the same command
again resumes: finished runs are read back, stopped ones go on from their last
checkpoint (or from the start, in the same directory, if they had none).

At the end it writes, into --out (default WORKDIR):
  <env>.json     per recipe and method: per-seed final normalised scores
                 (`final_normalized_scores`: the last policy's mean over the
                 config's eval_episodes), mean, IQM and 95% stratified-bootstrap
                 CIs (rliable, Agarwal et al. 2021), the probability that BRAC+
                 improves on BC with its CI, per-seed learning curves; the
                 same over each seed's mean of the evaluations in the last
                 third of training (`last_third`); the dataset's own mean
                 score, checksum and rows and whether it is the published
                 family's file (`data`), the library
                 versions, and the wall time of each run;
  <env>.md       the same as a table;
  <env>_<recipe>.png  learning curves: IQM over seeds with a 95% CI band,
                 x = gradient updates (BRAC+'s epoch 0 is its initial policy);
  <env>_<recipe>_multiplier.png, <env>_<recipe>_critic.png  BRAC+'s constraint
                 and critic per epoch (the report's multiplier.png and critic.png).
The JSON's `diagnostics` and the table's third part give, per seed, the
critic's correlation with the data's discounted Monte-Carlo returns (initial and
final), its over-estimation at the last evaluation, and the dataset mean
KL(s) / eps_KL and share of states above 1.2 eps_KL over the last third. Its
`criteria` (and the table's last part) say, per recipe, what BRAC+ must show on
that kind of data and whether it did: on `mixed`, an IQM at least 2x BC's with
the 95% CIs apart and P(BRAC+ > BC) >= 0.9; on `medium`, `medium_expert` and
`expert`, an IQM at most 3 below BC's and no seed below half of BC's IQM; on
`medium` and `expert`, an initial critic whose correlation with the data's
discounted returns is at least 0.9; everywhere, the dataset mean KL(s) over the
last third at most 1.2 eps_KL in every seed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from absl import flags
import ml_collections
import numpy as np

from bracplus_jax import config as config_lib
from bracplus_jax import data, experiment, extras
from bracplus_jax.cli import define_config_flag, exits_cleanly_on_input_errors, refuse_arguments, run_command
from bracplus_jax.collection import family
from bracplus_jax.collection.collect import RECIPES
from bracplus_jax.data.d4rl_source import cache_dir
from bracplus_jax.data.identity import run_versions
from bracplus_jax.errors import InputError
from bracplus_jax.files import atomic_path, atomic_write, write_json_atomically
from bracplus_jax.studies.estimates import interval_estimates, probability_of_improvement
from bracplus_jax.studies.outputs import markdown_table
from bracplus_jax.studies.run_figures import critic_figure, multiplier_figure
from bracplus_jax.studies.run_files import in_last_third, last_third, per_epoch, read_records, read_run, with_start

# What --config's errors suggest (`bracplus_jax.cli.run_command`).
CONFIG_EXAMPLE = "evidence"

METHODS = ("bc", "brac_plus")
METHOD_LABELS = {"bc": "BC", "brac_plus": "BRAC+"}


def parse_recipes(text: str) -> list[str]:
  names = [name.strip() for name in text.split(",") if name.strip()]
  usable = [recipe for recipe in RECIPES if recipe != "all" and not recipe.startswith("policy")]
  if not names:
    raise InputError(f"--recipes: none given; expected a comma-separated list of: {', '.join(usable)}")
  for name in names:
    if name not in usable:
      raise InputError(f"--recipes: unknown recipe '{name}'; expected some of: {', '.join(usable)}")
  if len(set(names)) != len(names):
    raise InputError("--recipes: a recipe is given twice; each runs once")
  return names


def _env_family(env: str) -> str:
  """'Hopper-v5' -> 'hopper', the key of the released code's per-task settings."""
  return env.split("-")[0].lower()


def recipe_config(config: ml_collections.ConfigDict, env: str, recipe: str, method: str,
                  num_seeds: int, data_dir: str) -> ml_collections.ConfigDict:
  """A copy of the shared config for one recipe and method: its dataset and KL margin."""
  from bracplus_jax.configs import base
  config = ml_collections.ConfigDict(config.to_dict())
  # The evidence config may set the initial critic's length per recipe (bracplus_jax/configs/evidence.py);
  # the run's own config keeps only the length that applies to it.
  critic_init_steps = config.get("recipe_critic_init_steps") or {}
  if "recipe_critic_init_steps" in config:
    del config["recipe_critic_init_steps"]
  if recipe in critic_init_steps:
    config.critic_init_steps = int(critic_init_steps[recipe])
  config.name = f"evidence_{env}_{recipe}_{method}"
  config.method = method
  config.num_seeds = num_seeds
  config.env = env
  config.dataset = f"hdf5:{os.path.join(data_dir, f'{env}_{recipe}.hdf5')}"
  config.make_dataset.recipe = recipe
  kind = "medium" if recipe == "expert" else recipe
  margin = base.KL_MARGINS[kind]
  family = _env_family(env)
  config.algo.kl_margin = base.MEDIUM_KL_MARGINS.get(family, 0.2) if margin is None else margin
  config.algo.gp_max_ood_grad_norm = 0.1 if family == "halfcheetah" else 0.01
  return config


def train_or_resume(config: ml_collections.ConfigDict, run_dir: str) -> dict[str, Any]:
  """The run's summary: read back if it finished, resumed if it stopped, else trained."""
  summary_path = os.path.join(run_dir, "summary.json")
  if os.path.isfile(summary_path):
    print(f"{run_dir}: finished earlier, read back")
    with open(summary_path) as file:
      return json.load(file)
  began = time.perf_counter()
  resume = os.path.isfile(os.path.join(run_dir, "config.json"))
  summary = experiment.run(config, run_dir, resume=resume)
  summary["wall_seconds_this_call"] = round(time.perf_counter() - began, 1)
  # The summary experiment.run wrote, plus the wall time.
  write_json_atomically(summary_path, summary)
  return summary


# ---------------------------------------------------------------------------
# Aggregates (rliable)
# ---------------------------------------------------------------------------


def last_third_scores(curve: dict[str, Any]) -> tuple[list[float], list[int]]:
  """Each seed's mean score over the evaluations in the last third of training, and their updates:
  a steadier figure than the last evaluation alone where the policy's score swings between
  evaluations."""
  updates = np.asarray(curve["updates"])
  last = in_last_third(updates)
  means = np.mean(np.asarray(curve["scores"], float)[last], axis=0)
  return [float(v) for v in means], [int(u) for u in updates[last]]


def learning_curve(run_dir: str, steps_per_epoch: int) -> dict[str, Any]:
  """Per-seed evaluation scores by gradient update: {'updates': [E], 'scores': [E][seeds]}."""
  epochs, values = per_epoch(read_records(run_dir), "eval", "normalized_score")
  return {"updates": [int(epoch) * steps_per_epoch for epoch in epochs],
          "scores": [[float(v) for v in row] for row in values]}


def _seed_values(values: np.ndarray) -> list[float]:
  return [round(float(v), 4) for v in values]


def run_diagnostics(run_dir: str) -> dict[str, Any]:
  """Why a BRAC+ run's score can be trusted, per seed: the critic against the data's discounted
  Monte-Carlo returns (the initial critic and the last epoch's), its over-estimation of the last
  evaluated policy's discounted return from s0, and the constraint over the last third of
  training (dataset mean KL(s) / eps_KL, share of states above 1.2 eps_KL)."""
  records = read_records(run_dir)
  result: dict[str, Any] = {}
  for metric in ("q_mc_correlation", "q_mc_mean_error"):
    epochs, values = with_start(records, metric, "critic_init")
    if epochs.size and epochs[0] == 0:
      result[f"initial_critic_{metric}"] = _seed_values(values[0])
    if epochs.size:
      result[f"final_{metric}"] = _seed_values(values[-1])
  epochs, values = per_epoch(records, "eval", "q_overestimation")
  if epochs.size:
    result["final_q_overestimation"] = _seed_values(values[-1])
  epochs, share = per_epoch(records, "epoch", "dataset_kl_violation_fraction_1_2x")
  if epochs.size:
    last = in_last_third(epochs)
    result["last_third_epochs"] = [int(epochs[last].min()), int(epochs[last].max())]
    result["last_third_kl_over_threshold"] = _seed_values(
        last_third(records, "dataset_kl_over_threshold"))
    result["last_third_share_above_1_2x"] = _seed_values(np.nanmean(share[last], axis=0))
    result["last_third_max_share_above_1_2x"] = _seed_values(np.nanmax(share[last], axis=0))
  return result


def dataset_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The data a recipe trained on: its file, checksum, rows and mean normalised score, and whether
  it is the file of the published family's manifest (docs/results/families/<env>.json)."""
  dataset = data.load_dataset(config.dataset, scale_rewards=False, env_id=config.env, progress=False)
  path = config.dataset.removeprefix("hdf5:")
  return {"file": path, "checksum": dataset.checksum, "rows": int(dataset.episode_lengths.sum()),
          "mean_normalized_score": float(np.mean(dataset.normalized_score(dataset.episode_returns))),
          "published_family": family.manifest_match(config.env, os.path.basename(path), dataset.checksum)}


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


def _format_interval(entry: dict[str, Any], name: str) -> str:
  low, high = entry[f"{name}_ci"]
  return f"{entry[name]:.1f} [{low:.1f}, {high:.1f}]"


def _format_improvement(improvement: dict[str, Any]) -> str:
  return f"{improvement['point']:.2f} [{improvement['ci'][0]:.2f}, {improvement['ci'][1]:.2f}]"


def _seed_list(scores: list[float]) -> str:
  return ", ".join(f"{v:.1f}" for v in scores)


def results_table(results: dict[str, Any]) -> str:
  header = ["recipe", "data's mean", "BC IQM [95% CI]", "BRAC+ IQM [95% CI]", "BC mean",
            "BRAC+ mean", "P(BRAC+ > BC) [95% CI]", "per-seed BC", "per-seed BRAC+"]
  rows = []
  for recipe, entry in results["recipes"].items():
    bc, brac = entry["methods"]["bc"], entry["methods"]["brac_plus"]
    improvement = entry["probability_of_improvement"]
    rows.append([
        recipe, f"{entry['dataset_mean_normalized_score']:.1f}", _format_interval(bc, "iqm"),
        _format_interval(brac, "iqm"), _format_interval(bc, "mean"), _format_interval(brac, "mean"),
        _format_improvement(improvement), _seed_list(bc["final_normalized_scores"]),
        _seed_list(brac["final_normalized_scores"])])
  return markdown_table(header, rows)


def last_third_table(results: dict[str, Any]) -> str:
  header = ["recipe", "evaluations (updates)", "BC IQM [95% CI]", "BRAC+ IQM [95% CI]",
            "P(BRAC+ > BC) [95% CI]", "per-seed BC", "per-seed BRAC+"]
  rows = []
  for recipe, entry in results["recipes"].items():
    window = entry["last_third"]
    improvement = window["probability_of_improvement"]
    rows.append([
        recipe, ", ".join(f"{u // 1000}k" if u % 1000 == 0 else str(u) for u in window["updates"]["brac_plus"]),
        _format_interval(window["bc"], "iqm"), _format_interval(window["brac_plus"], "iqm"),
        _format_improvement(improvement), _seed_list(window["bc"]["normalized_scores"]),
        _seed_list(window["brac_plus"]["normalized_scores"])])
  return markdown_table(header, rows)


# What BRAC+ must show on each kind of data (README, "Results"): on mixed data it beats behaviour
# cloning clearly; on data of one good policy it keeps BC's level without a seed collapsing; its
# critic fits the data's returns where one policy made them; everywhere it holds the constraint.
MIXED_DATA_RATIO = 2.0
GOOD_DATA_SLACK = 3.0
MIN_PROBABILITY_OF_IMPROVEMENT = 0.9
MIN_INITIAL_CRITIC_CORRELATION = 0.9
MAX_KL_OVER_THRESHOLD = 1.2


def _check(criterion: str, value: float, met: bool) -> dict[str, Any]:
  return {"criterion": criterion, "value": round(float(value), 4), "met": bool(met)}


def criteria(recipe: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
  """Each criterion of the recipe's kind of data, its measured value and whether it is met."""
  bc, brac = entry["methods"]["bc"], entry["methods"]["brac_plus"]
  found = entry.get("diagnostics", {})
  checks = []
  if recipe == "mixed":
    checks.append(_check(f"BRAC+ IQM / BC IQM >= {MIXED_DATA_RATIO:g}",
                         brac["iqm"] / bc["iqm"] if bc["iqm"] > 0 else np.inf,
                         brac["iqm"] >= MIXED_DATA_RATIO * bc["iqm"]))
    checks.append(_check("the 95% CIs of the IQMs apart: BRAC+'s lower end - BC's upper end > 0",
                         brac["iqm_ci"][0] - bc["iqm_ci"][1], brac["iqm_ci"][0] > bc["iqm_ci"][1]))
    improvement = entry["probability_of_improvement"]["point"]
    checks.append(_check(f"P(BRAC+ > BC) >= {MIN_PROBABILITY_OF_IMPROVEMENT:g}", improvement,
                         improvement >= MIN_PROBABILITY_OF_IMPROVEMENT))
  if recipe in ("medium", "medium_expert", "expert"):
    checks.append(_check(f"BRAC+ IQM - BC IQM >= -{GOOD_DATA_SLACK:g}", brac["iqm"] - bc["iqm"],
                         brac["iqm"] >= bc["iqm"] - GOOD_DATA_SLACK))
    lowest = min(brac["final_normalized_scores"])
    checks.append(_check("lowest BRAC+ seed / (BC IQM / 2) >= 1", lowest / (bc["iqm"] / 2),
                         lowest >= bc["iqm"] / 2))
  if recipe in ("medium", "expert") and found.get("initial_critic_q_mc_correlation"):
    lowest = min(found["initial_critic_q_mc_correlation"])
    checks.append(_check(f"initial critic's corr(Q, MC return), lowest seed >= "
                         f"{MIN_INITIAL_CRITIC_CORRELATION:g}", lowest,
                         lowest >= MIN_INITIAL_CRITIC_CORRELATION))
  if found.get("last_third_kl_over_threshold"):
    highest = max(found["last_third_kl_over_threshold"])
    checks.append(_check(f"dataset mean KL(s) / eps_KL over the last third, highest seed <= "
                         f"{MAX_KL_OVER_THRESHOLD:g}", highest, highest <= MAX_KL_OVER_THRESHOLD))
  return checks


def criteria_table(results: dict[str, Any]) -> str:
  rows = [[recipe, check["criterion"], f"{check['value']:.2f}", "met" if check["met"] else "**missed**"]
          for recipe, entry in results["recipes"].items() for check in entry.get("criteria", [])]
  return markdown_table(["recipe", "criterion", "value", "met"], rows)


def diagnostics_table(results: dict[str, Any]) -> str:
  header = ["recipe", "initial critic: corr(Q, MC return)", "final critic: corr(Q, MC return)",
            "final Q(s0) over-estimation", "mean KL(s) / eps_KL, last third",
            "share > 1.2 eps_KL, last third (max)"]
  def cell(entry, name, digits=2):
    values = entry.get(name)
    return " / ".join(f"{v:.{digits}f}" for v in values) if values else "n/a"
  rows = []
  for recipe, entry in results["recipes"].items():
    found = entry.get("diagnostics", {})
    shares = cell(found, "last_third_share_above_1_2x")
    if found.get("last_third_max_share_above_1_2x"):
      shares += f" ({max(found['last_third_max_share_above_1_2x']):.2f})"
    rows.append([recipe, cell(found, "initial_critic_q_mc_correlation"),
                 cell(found, "final_q_mc_correlation"), cell(found, "final_q_overestimation", 1),
                 cell(found, "last_third_kl_over_threshold"), shares])
  return markdown_table(header, rows)


def _iqm_band(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """IQM and its 95% CI at every evaluation point, scores [points, seeds]."""
  points, lows, highs = [], [], []
  for row in scores:
    estimate = interval_estimates({"x": row})["x"]
    points.append(estimate["iqm"])
    lows.append(estimate["iqm_ci"][0])
    highs.append(estimate["iqm_ci"][1])
  return np.array(points), np.array(lows), np.array(highs)


def curves_figure(env: str, recipe: str, entry: dict[str, Any]):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(6.0, 4.0))
  for index, method in enumerate(METHODS):
    curve = entry["methods"][method]["curve"]
    updates = np.asarray(curve["updates"])
    iqm, low, high = _iqm_band(np.asarray(curve["scores"]))
    color = f"C{index}"
    seeds = len(entry["methods"][method]["final_normalized_scores"])
    axes.plot(updates, iqm, color=color, marker="o", markersize=3,
              label=f"{METHOD_LABELS[method]} (IQM, {seeds} seeds)")
    axes.fill_between(updates, low, high, color=color, alpha=0.2, linewidth=0)
  axes.axhline(entry["dataset_mean_normalized_score"], color="0.4", linestyle="--", linewidth=1,
               label="the data's mean")
  axes.set_xlabel("gradient updates")
  axes.set_ylabel("normalised score")
  axes.set_title(f"{env} {recipe}: IQM with 95% bootstrap CI")
  axes.legend(loc="best", fontsize=8)
  figure.tight_layout()
  return figure


def run_evidence(config: ml_collections.ConfigDict, env: str, recipes: list[str], num_seeds: int,
                 workdir: str, out_dir: str, data_dir: str) -> dict[str, Any]:
  if num_seeds < 1:
    raise InputError(f"--seeds: {num_seeds}; expected a positive number of seeds")
  configs = {(recipe, method): recipe_config(config, env, recipe, method, num_seeds, data_dir)
             for recipe in recipes for method in METHODS}
  for (recipe, method), run_config in configs.items():  # every config is checked before training
    try:
      config_lib.validate(run_config)
    except InputError as error:
      raise InputError(f"recipe {recipe}, {method}: {error}") from error
    if not run_config.eval_episodes:
      raise InputError("--config.eval_episodes: 0; the evidence is the evaluation, so it must be >= 1")
  experiment.check_environment(env)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  print(f"evidence directory: {workdir} (run the same command again to resume)")
  results: dict[str, Any] = {"env": env, "seeds": num_seeds, "config": config.to_dict(),
                             "library_versions": run_versions(), "recipes": {}}
  for recipe in recipes:
    entry: dict[str, Any] = {"methods": {}}
    for method in METHODS:
      run_config = configs[(recipe, method)]
      print(f"\n=== {recipe}: {METHOD_LABELS[method]} ({num_seeds} seeds) ===", flush=True)
      run_dir = os.path.join(workdir, recipe, method)
      summary = train_or_resume(run_config, run_dir)
      if "normalized_score" not in summary:
        raise InputError(f"{run_config.dataset}: no reference returns, so no normalised scores")
      entry["dataset"] = run_config.dataset
      entry["methods"][method] = {
          "final_normalized_scores": summary["normalized_score"],
          "final_returns": summary["return"],
          "curve": learning_curve(run_dir, run_config.steps_per_epoch),
          "gradient_steps_per_seed": summary["gradient_steps_per_seed"],
          "phase_seconds": summary["phase_seconds"],
          "run_dir": os.path.relpath(run_dir, workdir),
      }
    scores = {method: np.asarray(entry["methods"][method]["final_normalized_scores"]) for method in METHODS}
    for method, estimate in interval_estimates(scores).items():
      entry["methods"][method].update(estimate)
    entry["probability_of_improvement"] = probability_of_improvement(scores["brac_plus"], scores["bc"])
    window = {method: last_third_scores(entry["methods"][method]["curve"]) for method in METHODS}
    entry["last_third"] = {"updates": {method: window[method][1] for method in METHODS}}
    window_scores = {method: np.asarray(window[method][0]) for method in METHODS}
    for method, estimate in interval_estimates(window_scores).items():
      entry["last_third"][method] = {"normalized_scores": window[method][0]} | estimate
    entry["last_third"]["probability_of_improvement"] = probability_of_improvement(
        window_scores["brac_plus"], window_scores["bc"])
    entry["diagnostics"] = run_diagnostics(os.path.join(workdir, recipe, "brac_plus"))
    entry["data"] = dataset_record(configs[(recipe, "bc")])
    entry["dataset_mean_normalized_score"] = entry["data"]["mean_normalized_score"]
    entry["criteria"] = criteria(recipe, entry)
    results["recipes"][recipe] = entry
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, env.lower())
  write_json_atomically(f"{stem}.json", results, default=list)
  table, window_table, critic_and_constraint, targets = (
      results_table(results), last_third_table(results), diagnostics_table(results), criteria_table(results))
  with atomic_write(f"{stem}.md") as file:
    file.write(table + "\nEach seed's mean over the evaluations of the last third of training:\n\n"
               + window_table + "\nBRAC+'s critic and constraint, per seed:\n\n" + critic_and_constraint
               + "\nWhat BRAC+ must show on each kind of data:\n\n" + targets)
  for recipe, entry in results["recipes"].items():
    run = read_run(f"{recipe} BRAC+", os.path.join(workdir, recipe, "brac_plus"))
    for path, figure, dpi in ((f"{stem}_{recipe}.png", curves_figure(env, recipe, entry), 120),
                              (f"{stem}_{recipe}_multiplier.png", multiplier_figure([run]), 100),
                              (f"{stem}_{recipe}_critic.png", critic_figure([run]), 100)):
      with atomic_path(path) as partial:
        figure.savefig(partial, format="png", dpi=dpi)
  print("\n" + table + "\n" + window_table + "\n" + critic_and_constraint + "\n" + targets)
  print(f"results: {stem}.json, {stem}.md, {stem}_<recipe>.png, {stem}_<recipe>_multiplier.png, "
        f"{stem}_<recipe>_critic.png")
  return results


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def define_flags() -> None:
  define_config_flag("evidence", "The settings every recipe shares: a packaged config's name "
                     "(default: evidence, bracplus_jax/configs/evidence.py) or a config file's path.")
  flags.DEFINE_string("env", "Hopper-v5", "A gymnasium MuJoCo env id; its datasets are made here.")
  flags.DEFINE_string("recipes", "mixed,medium,medium_expert", "Comma-separated collector recipes.")
  flags.DEFINE_integer("seeds", 4, "Seeds per method and recipe, vmapped in one process.")
  flags.DEFINE_string("workdir", None, "The runs' parent directory (default runs/evidence-<env>); "
                      "the same one resumes.")
  flags.DEFINE_string("out", None, "Where the JSON, table and figures go (default: --workdir).")
  flags.DEFINE_string("data_dir", None, "Where the datasets are, or are made (default "
                      "$BRACPLUS_DATA/generated or ~/.cache/bracplus_jax/generated).")


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  refuse_arguments(argv)
  extras.require("evidence", "bracplus evidence")  # before any training, not at its end
  options = flags.FLAGS
  recipes = parse_recipes(options.recipes)
  workdir = options.workdir or os.path.join("runs", f"evidence-{options.env}")
  data_dir = options.data_dir or os.path.join(cache_dir(), "generated")
  run_evidence(options.config, options.env, recipes, options.seeds, workdir,
               options.out or workdir, os.path.abspath(os.path.expanduser(data_dir)))


if __name__ == "__main__":
  run_command(sys.modules[__name__])
