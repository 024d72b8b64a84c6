"""bracplus combine: the evidence of several environments in one table and one figure.

  bracplus combine --results=DIR_OR_JSON[,DIR_OR_JSON ...] --out=DIR [--bootstrap_reps=2000]

Reads the <env>.json files that `bracplus evidence` writes; a folder stands for
the paper's three, hopper-v5.json, walker2d-v5.json and halfcheetah-v5.json, where
it holds them. A task is one environment and recipe. Writes into --out:
  three_envs.json  per task: the data's checksum and mean score, BC's and BRAC+'s
                   IQM with 95% CIs, P(BRAC+ > BC) with its CI and the per-seed
                   final scores, as the evidence JSON gives them; every criterion
                   with its value, met or missed, and BRAC+'s critic and constraint
                   per seed. Over all tasks: each method's IQM of the runs x tasks
                   scores and P(BRAC+ > BC) averaged over tasks, with 95%
                   stratified-bootstrap CIs (rliable). Each environment's wall time
                   and the total; which of the paper's environments are absent;
  three_envs.md    the same as tables;
  three_envs.png   the IQM over all tasks with its CI per method, beside each
                   task's IQMs with theirs.
The aggregates take the same number of seeds per method in every task (rliable's
runs x tasks matrix). A wall time is the runs' phase times summed (behaviour,
initial policy, initial critic, RL, evaluation); making the data is not counted.
An existing file in --out is never overwritten.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional

from absl import flags
import numpy as np

from bracplus_jax import extras
from bracplus_jax.cli import exits_cleanly_on_input_errors, refuse_arguments, run_command
from bracplus_jax.errors import InputError
from bracplus_jax.studies.estimates import BOOTSTRAP_REPS, interval_estimates, probability_of_improvement
from bracplus_jax.studies.outputs import markdown_table, new_file_paths, png_bytes, write_new_file

PAPER_ENVS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")
METHODS = ("bc", "brac_plus")
METHOD_LABELS = {"bc": "BC", "brac_plus": "BRAC+"}
OUTPUT_STEM = "three_envs"
EXPECTED = "expected the <env>.json that `bracplus evidence` writes"


# ---------------------------------------------------------------------------
# Reading the evidence
# ---------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scores(value: Any) -> bool:
  return isinstance(value, list) and bool(value) and all(_is_number(v) for v in value)


def _is_interval(value: Any) -> bool:
  return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _is_criterion(value: Any) -> bool:
  return (isinstance(value, dict) and isinstance(value.get("criterion"), str)
          and _is_number(value.get("value")) and isinstance(value.get("met"), bool))


# What every recipe's entry must hold to be combined: (dotted path, test, what it is).
ENTRY_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    *((f"methods.{method}.final_normalized_scores", _is_scores, "a list of per-seed scores")
      for method in METHODS),
    *((f"methods.{method}.iqm", _is_number, "a number") for method in METHODS),
    *((f"methods.{method}.iqm_ci", _is_interval, "a [low, high] interval") for method in METHODS),
    ("probability_of_improvement.point", _is_number, "a number"),
    ("probability_of_improvement.ci", _is_interval, "a [low, high] interval"),
    ("dataset_mean_normalized_score", _is_number, "a number"),
)


def _lookup(tree: Any, dotted: str) -> Any:
  for key in dotted.split("."):
    if not isinstance(tree, dict) or key not in tree:
      return None
    tree = tree[key]
  return tree


def evidence_problem(results: Any) -> Optional[str]:
  """What keeps a JSON value from being an evidence result, or None when it is one."""
  if not isinstance(results, dict):
    return "not a JSON object"
  if not isinstance(results.get("env"), str):
    return "no 'env' naming its environment"
  recipes = results.get("recipes")
  if not isinstance(recipes, dict) or not recipes:
    return "no 'recipes'"
  for recipe, entry in recipes.items():
    for dotted, test, what in ENTRY_FIELDS:
      if not test(_lookup(entry, dotted)):
        return f"'recipes.{recipe}.{dotted}' is not {what}"
    # Evidence written before the criteria existed has none; what is there must be whole.
    found = entry.get("criteria", [])
    if not isinstance(found, list) or not all(_is_criterion(check) for check in found):
      return f"'recipes.{recipe}.criteria' is not a list of {{criterion, value, met}}"
  return None


def read_evidence(path: str) -> dict[str, Any]:
  """One evidence JSON, checked; InputError naming the file and what was expected."""
  try:
    with open(path) as file:
      results = json.load(file)
  except json.JSONDecodeError as error:
    raise InputError(f"--results: {path} is not JSON ({error}); {EXPECTED}") from error
  except (OSError, UnicodeDecodeError) as error:
    raise InputError(f"--results: {path} cannot be read ({error}); {EXPECTED}") from error
  problem = evidence_problem(results)
  if problem:
    raise InputError(f"--results: {path} is not an evidence result ({problem}); {EXPECTED}")
  return results


def paper_file_names() -> list[str]:
  """The names the evidence command gives the paper's environments' results."""
  return [f"{env.lower()}.json" for env in PAPER_ENVS]


def evidence_files(spec: str) -> list[str]:
  """The files a --results value names: each JSON as given, each folder's paper env files."""
  paths = [part.strip() for part in spec.split(",") if part.strip()]
  if not paths:
    raise InputError("--results: none given; expected evidence JSONs or folders holding them, "
                     "comma-separated")
  files = []
  for path in paths:
    path = os.path.expanduser(path)
    if os.path.isdir(path):
      found = [os.path.join(path, name) for name in paper_file_names()
               if os.path.isfile(os.path.join(path, name))]
      if not found:
        raise InputError(f"--results: the folder {path} holds none of {', '.join(paper_file_names())}; "
                         f"{EXPECTED}")
      files += found
    elif os.path.isfile(path):
      files.append(path)
    else:
      raise InputError(f"--results: {path} does not exist; {EXPECTED}, or a folder holding them")
  return files


def read_all(paths: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
  """env -> (file, evidence), the paper's environments first; an env given twice is refused."""
  found: dict[str, tuple[str, dict[str, Any]]] = {}
  for path in paths:
    results = read_evidence(path)
    env = results["env"]
    if env in found:
      if os.path.samefile(found[env][0], path):
        continue  # a folder and a file in it naming the same results
      raise InputError(f"--results: {env} is given twice, by {found[env][0]} and {path}; "
                       f"expected one evidence result per environment")
    found[env] = (path, results)
  order = {env: index for index, env in enumerate(PAPER_ENVS)}
  return dict(sorted(found.items(), key=lambda item: order.get(item[0], len(order))))


# ---------------------------------------------------------------------------
# Combining
# ---------------------------------------------------------------------------


def task_record(env: str, recipe: str, entry: dict[str, Any]) -> dict[str, Any]:
  """One task's row: read from the evidence JSON as it is, nothing recomputed."""
  data = entry.get("data") or {}
  record = {"env": env, "recipe": recipe, "data_checksum": data.get("checksum"),
            "data_rows": data.get("rows"), "data_mean_normalized_score": entry["dataset_mean_normalized_score"],
            "probability_of_improvement": entry["probability_of_improvement"],
            "criteria": entry.get("criteria", []), "diagnostics": entry.get("diagnostics", {})}
  for method in METHODS:
    found = entry["methods"][method]
    record[method] = {"iqm": found["iqm"], "iqm_ci": found["iqm_ci"],
                      "final_normalized_scores": found["final_normalized_scores"]}
  return record


def task_records(evidence: dict[str, tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
  return [task_record(env, recipe, entry) for env, (_, results) in evidence.items()
          for recipe, entry in results["recipes"].items()]


def scores_matrix(tasks: list[dict[str, Any]], method: str) -> np.ndarray:
  """A method's final scores as rliable's [runs, tasks] matrix; InputError where the tasks'
  seed counts differ, since the matrix has one number of runs."""
  counts = {}
  for task in tasks:
    counts.setdefault(len(task[method]["final_normalized_scores"]), f"{task['env']} {task['recipe']}")
  if len(counts) > 1:
    seen = ", ".join(f"{count} in {task}" for count, task in counts.items())
    raise InputError(f"--results: {METHOD_LABELS[method]} has different numbers of seeds ({seen}); "
                     f"the aggregate over tasks expects the same number in every task")
  return np.array([task[method]["final_normalized_scores"] for task in tasks], float).T


def aggregate(tasks: list[dict[str, Any]], reps: int) -> dict[str, Any]:
  """Over all tasks: each method's IQM (and mean) of its runs x tasks scores, and P(BRAC+ > BC)
  averaged over tasks, with 95% stratified-bootstrap CIs."""
  matrices = {method: scores_matrix(tasks, method) for method in METHODS}
  result: dict[str, Any] = {"tasks": len(tasks), "bootstrap_reps": reps,
                            "runs_per_task": {method: int(matrices[method].shape[0]) for method in METHODS}}
  result |= interval_estimates(matrices, reps=reps)
  result["probability_of_improvement"] = probability_of_improvement(
      matrices["brac_plus"], matrices["bc"], reps=reps)
  return result


def run_seconds(method_entry: dict[str, Any]) -> Optional[float]:
  phases = method_entry.get("phase_seconds")
  if not isinstance(phases, dict) or not all(_is_number(v) for v in phases.values()):
    return None
  return float(sum(phases.values()))


def wall_seconds(evidence: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
  """Each env's wall time, its runs' phase times summed, and the total; None where a run
  recorded none (the total then counts the envs that have one)."""
  per_env = {}
  for env, (_, results) in evidence.items():
    seconds = [run_seconds(entry["methods"][method]) for entry in results["recipes"].values()
               for method in METHODS]
    per_env[env] = None if None in seconds else round(sum(seconds), 2)
  total = round(sum(v for v in per_env.values() if v is not None), 2)
  return {"per_env": per_env, "total": total}


def absent_envs(envs: list[str]) -> list[str]:
  return [env for env in PAPER_ENVS if env not in envs]


def combine(evidence: dict[str, tuple[str, dict[str, Any]]], reps: int = BOOTSTRAP_REPS) -> dict[str, Any]:
  """The combined results (three_envs.json) of the evidence of each env."""
  tasks = task_records(evidence)
  return {"envs": list(evidence), "absent": absent_envs(list(evidence)),
          "sources": {env: path for env, (path, _) in evidence.items()},
          "tasks": tasks, "aggregate": aggregate(tasks, reps),
          "wall_seconds": wall_seconds(evidence),
          "library_versions": {env: results.get("library_versions") for env, (_, results) in evidence.items()}}


# ---------------------------------------------------------------------------
# Tables and the figure
# ---------------------------------------------------------------------------


def _interval(point: float, interval: list[float], digits: int = 1) -> str:
  return f"{point:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _seed_list(scores: list[float]) -> str:
  return ", ".join(f"{v:.1f}" for v in scores)


def _criteria_summary(criteria: list[dict[str, Any]]) -> str:
  if not criteria:
    return "none recorded"
  missed = sum(not check["met"] for check in criteria)
  return f"{len(criteria) - missed}/{len(criteria)} met" + (f", **{missed} missed**" if missed else "")


def duration(seconds: Optional[float]) -> str:
  """'1 h 18 min 25 s', '25 min 3 s'; 'not recorded' for None."""
  if seconds is None:
    return "not recorded"
  whole = int(round(seconds))
  hours, rest = divmod(whole, 3600)
  minutes, secs = divmod(rest, 60)
  return (f"{hours} h " if hours else "") + (f"{minutes} min " if hours or minutes else "") + f"{secs} s"


def results_table(combined: dict[str, Any]) -> str:
  header = ["env", "recipe", "data (sha256)", "data's mean", "BC IQM [95% CI]", "BRAC+ IQM [95% CI]",
            "P(BRAC+ > BC) [95% CI]", "per-seed BC", "per-seed BRAC+", "criteria"]
  rows = []
  for task in combined["tasks"]:
    improvement = task["probability_of_improvement"]
    checksum = task["data_checksum"][:12] if task["data_checksum"] else "n/a"
    rows.append([task["env"], task["recipe"], f"`{checksum}`", f"{task['data_mean_normalized_score']:.1f}",
                 _interval(task["bc"]["iqm"], task["bc"]["iqm_ci"]),
                 _interval(task["brac_plus"]["iqm"], task["brac_plus"]["iqm_ci"]),
                 _interval(improvement["point"], improvement["ci"], 2),
                 _seed_list(task["bc"]["final_normalized_scores"]),
                 _seed_list(task["brac_plus"]["final_normalized_scores"]), _criteria_summary(task["criteria"])])
  overall = combined["aggregate"]
  improvement = overall["probability_of_improvement"]
  rows.append([f"**all {overall['tasks']} tasks**", "", "", "",
               _interval(overall["bc"]["iqm"], overall["bc"]["iqm_ci"]),
               _interval(overall["brac_plus"]["iqm"], overall["brac_plus"]["iqm_ci"]),
               _interval(improvement["point"], improvement["ci"], 2), "", "", ""])
  return markdown_table(header, rows)


def criteria_table(combined: dict[str, Any]) -> str:
  rows = [[task["env"], task["recipe"], check["criterion"], f"{check['value']:.2f}",
           "met" if check["met"] else "**missed**"]
          for task in combined["tasks"] for check in task["criteria"]]
  return markdown_table(["env", "recipe", "criterion", "value", "met"], rows)


def _per_seed_cell(found: dict[str, Any], name: str, digits: int = 2) -> str:
  values = found.get(name)
  return " / ".join(f"{v:.{digits}f}" for v in values) if values else "n/a"


def diagnostics_table(combined: dict[str, Any]) -> str:
  header = ["env", "recipe", "initial critic: corr(Q, MC return)", "final critic: corr(Q, MC return)",
            "final Q(s0) over-estimation", "mean KL(s) / eps_KL, last third",
            "share > 1.2 eps_KL, last third (max)"]
  rows = []
  for task in combined["tasks"]:
    found = task["diagnostics"]
    shares = _per_seed_cell(found, "last_third_share_above_1_2x")
    if found.get("last_third_max_share_above_1_2x"):
      shares += f" ({max(found['last_third_max_share_above_1_2x']):.2f})"
    rows.append([task["env"], task["recipe"], _per_seed_cell(found, "initial_critic_q_mc_correlation"),
                 _per_seed_cell(found, "final_q_mc_correlation"),
                 _per_seed_cell(found, "final_q_overestimation", 1),
                 _per_seed_cell(found, "last_third_kl_over_threshold"), shares])
  return markdown_table(header, rows)


def wall_time_table(combined: dict[str, Any]) -> str:
  times = combined["wall_seconds"]
  rows = [[env, duration(seconds)] for env, seconds in times["per_env"].items()]
  rows.append(["**total**", duration(times["total"])])
  return markdown_table(["env", "wall time"], rows)


def markdown(combined: dict[str, Any]) -> str:
  overall = combined["aggregate"]
  given = ", ".join(f"{env} (`{path}`)" for env, path in combined["sources"].items())
  absent = ", ".join(combined["absent"]) or "none"
  runs = ", ".join(f"{METHOD_LABELS[m]} {overall['runs_per_task'][m]}" for m in METHODS)
  return (f"Evidence of: {given}. Absent of the paper's three: {absent}.\n\n"
          + results_table(combined)
          + f"\nThe last row: each method's IQM over all runs x tasks (seeds per task: {runs}) and "
            f"P(BRAC+ > BC) averaged over tasks, with 95% stratified-bootstrap CIs "
            f"({overall['bootstrap_reps']} draws).\n\nWhat BRAC+ must show on each kind of data:\n\n"
          + criteria_table(combined) + "\nBRAC+'s critic and constraint, per seed:\n\n"
          + diagnostics_table(combined)
          + "\nWall time (the runs' phase times summed; making the data is not counted):\n\n"
          + wall_time_table(combined))


def _error_bar(axes, x: float, point: float, interval: list[float], color: str, **style) -> None:
  axes.errorbar([x], [point], yerr=[[point - interval[0]], [interval[1] - point]], fmt="o",
                color=color, capsize=4, **style)


def combined_figure(combined: dict[str, Any]):
  """Left: each method's IQM over all tasks with its 95% CI; right: each task's IQMs."""
  from matplotlib.figure import Figure
  tasks = combined["tasks"]
  figure = Figure(figsize=(3.5 + 1.0 * len(tasks), 4.5))
  left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, max(1.5, 0.9 * len(tasks))]},
                                sharey=True)
  for index, method in enumerate(METHODS):
    entry = combined["aggregate"][method]
    _error_bar(left, index, entry["iqm"], entry["iqm_ci"], f"C{index}", markersize=8)
    for position, task in enumerate(tasks):
      # The two methods side by side at each task.
      _error_bar(right, position + (index - 0.5) * 0.3, task[method]["iqm"], task[method]["iqm_ci"],
                 f"C{index}", label=METHOD_LABELS[method] if position == 0 else None)
  left.set_xticks(range(len(METHODS)), [METHOD_LABELS[m] for m in METHODS])
  left.set_xlim(-0.6, len(METHODS) - 0.4)
  left.set_ylabel("normalised score")
  left.set_title(f"all {len(tasks)} tasks: IQM, 95% CI", fontsize=10)
  right.set_xticks(range(len(tasks)), [f"{task['env']}\n{task['recipe']}" for task in tasks], fontsize=8)
  right.set_title("each task: IQM, 95% CI", fontsize=10)
  right.legend(loc="best", fontsize=8)
  if combined["absent"]:
    figure.suptitle(f"absent of the paper's three: {', '.join(combined['absent'])}", fontsize=9)
  figure.tight_layout()
  return figure


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def write_combined(results: str, out_dir: str, reps: int = BOOTSTRAP_REPS) -> list[str]:
  """Reads and checks every input, then writes three_envs.json, .md and .png into out_dir;
  returns the files written."""
  if reps < 1:
    raise InputError(f"--bootstrap_reps: {reps}; expected a positive number of bootstrap draws")
  evidence = read_all(evidence_files(results))
  combined = combine(evidence, reps)
  outputs = {f"{OUTPUT_STEM}.json": lambda: (json.dumps(combined, indent=2) + "\n").encode(),
             f"{OUTPUT_STEM}.md": lambda: markdown(combined).encode(),
             f"{OUTPUT_STEM}.png": lambda: png_bytes(combined_figure(combined))}
  paths = new_file_paths(out_dir, outputs)
  for path, content in zip(paths, outputs.values()):
    write_new_file(path, content())
  print(markdown(combined))
  if combined["absent"]:
    print(f"absent of the paper's three: {', '.join(combined['absent'])}")
  return paths


def define_flags() -> None:
  """Only when run as a program: other modules define flags of the same names."""
  flags.DEFINE_string("results", None, "Comma-separated evidence JSONs (<env>.json of `bracplus "
                      "evidence`) or folders holding them.")
  flags.DEFINE_string("out", None, "The folder to write three_envs.json, .md and .png into; "
                      "they must not exist yet.")
  flags.DEFINE_integer("bootstrap_reps", BOOTSTRAP_REPS, "Bootstrap draws of each 95% CI.")


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  refuse_arguments(argv)
  options = flags.FLAGS
  if not options.results:
    raise InputError("--results: missing; expected evidence JSONs (<env>.json) or folders holding them, "
                     "comma-separated")
  if not options.out:
    raise InputError(f"--out: missing; expected the folder to write {OUTPUT_STEM}.json, .md and .png into")
  extras.require("evidence", "bracplus combine")
  for path in write_combined(options.results, options.out, options.bootstrap_reps):
    print(f"wrote {path}")


if __name__ == "__main__":
  run_command(sys.modules[__name__])
