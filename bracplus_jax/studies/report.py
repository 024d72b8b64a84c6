"""bracplus report: the paper's run figures, drawn from run directories.

  bracplus report <run dir> [<run dir> ...] --out=<folder>

A run directory is one training run (`bracplus train`) or an ablation's parent
directory (`bracplus ablate`), which stands for its variants'
runs in order. Everything is read from the runs' files, nothing is recomputed:

  scores.png         normalised score (return where the task has no reference
                     returns) at every evaluation, mean and std over seeds (Fig. 2)
  q_values.png       average Q over training, mean and std over seeds; epoch 0 is
                     the initial critic (Fig. 1: with vs without gradient penalty)
  kl_histogram.png   KL(s) of the final policy at every dataset state, all seeds
                     pooled, eps_KL and eps_GP marked; one panel per run (Fig. 3)
  ood_gradients.png  ||grad_a Q(s, a)|| at out-of-distribution actions: the final
                     policy's actions at the states where KL(s) > eps_GP, all seeds
                     pooled, one histogram per run (Fig. 6)
  multiplier.png     per epoch, over every dataset state: the mean KL(s) against
                     eps_KL and the share of states above 1.2 eps_KL (left), and
                     alpha(s) among the states above eps_KL against the rest
                     (right): whether the multiplier holds the constraint and
                     rises where it is broken
  critic.png         the critic against the data's discounted Monte-Carlo returns
                     (correlation, epoch 0 the initial critic; left) and at each
                     evaluation Q(s0, a0) minus the discounted return the policy
                     obtained from s0 (over-estimation; right)
  table.md           final return and normalised score (mean +- std over seeds),
                     final Q, the constraint and critic figures, and the
                     diagnostics' summaries, one line per run
  sweep.png          for a sweep (`bracplus train` with --config.sweep.*): the final
                     score against each swept field's values, mean and a 95%
                     bootstrap confidence band over seeds, one line per value of
                     the other fields, the best point starred

A sweep's points count as runs of their own everywhere else ("kl_margin=1").

The two histograms read each run's diagnostics.npz (`ablate.final_diagnostics`);
a run without one is left out of them with a note. An existing file in the
folder is never overwritten.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import flags
from matplotlib.figure import Figure
import numpy as np

from bracplus_jax.cli import exits_cleanly_on_input_errors, run_command
from bracplus_jax.errors import InputError
from bracplus_jax.studies.outputs import markdown_table, mean_std, new_file_paths, png_bytes, write_new_file
from bracplus_jax.studies.run_figures import color, critic_figure, integer_epochs, mean_and_band, multiplier_figure
from bracplus_jax.studies.run_files import (
    ABLATION_RESULTS, DIAGNOSTICS_FILE, Run, last_third, per_epoch, read_json, read_run, result_row, with_start)

SCORES_FIGURE = "scores.png"
Q_FIGURE = "q_values.png"
KL_FIGURE = "kl_histogram.png"
OOD_FIGURE = "ood_gradients.png"
TABLE = "table.md"
SWEEP_FIGURE = "sweep.png"
MULTIPLIER_FIGURE = "multiplier.png"
CRITIC_FIGURE = "critic.png"
BOOTSTRAP_RESAMPLES = 2000
HISTOGRAM_BINS = 60


# ---------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------


def run_directories(paths: list[str]) -> list[tuple[str, str]]:
  """(label, run dir) for every run named: a run directory, or an ablation's variants."""
  found = []
  for path in paths:
    path = os.path.abspath(os.path.expanduser(path))
    ablation = os.path.join(path, ABLATION_RESULTS)
    if os.path.isfile(os.path.join(path, "config.json")):
      found.append((os.path.basename(path), path))
    elif os.path.isfile(ablation):
      for row in read_json(ablation)["variants"]:
        found.append((row["variant"], os.path.join(path, os.path.basename(row["run_dir"]))))
    else:
      raise InputError(f"{path}: neither a run directory (config.json) nor an ablation "
                       f"directory ({ABLATION_RESULTS})")
  labels = [label for label, _ in found]
  # Two runs of the same name (the same variant of two ablations, say) keep their parent's name.
  return [(f"{os.path.basename(os.path.dirname(run_dir))}/{label}" if labels.count(label) > 1
           else label, run_dir) for label, run_dir in found]


def sweep_points(run: Run) -> list[Run]:
  """A sweep's points as runs of their own, labelled by their values; other runs as they are."""
  if not run.summary or "points" not in run.summary:
    points = sorted({r["point"] for r in run.records if "point" in r})
    if not points:
      return [run]
    return [Run(f"{run.label} point {point}", run.run_dir,
                [r for r in run.records if r.get("point") == point], None, None) for point in points]
  common = {"seeds": run.summary["seeds"], "run_dir": run.run_dir}
  return [Run(point["label"], run.run_dir, [r for r in run.records if r.get("point") == point["point"]],
              common | point, None) for point in run.summary["points"]]


def bootstrap_interval(values: np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap confidence interval of the mean of `values`."""
  values = np.asarray(values, np.float64)
  rng = np.random.default_rng(seed)
  means = rng.choice(values, size=(BOOTSTRAP_RESAMPLES, values.size), replace=True).mean(axis=1)
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(means, [tail, 100 - tail])
  return float(low), float(high)


def sweep_figure(run: Run) -> Figure:
  """The final score against each swept field: one panel per field, one line per setting of
  the other fields, mean over seeds with a 95% bootstrap band; the best point starred."""
  summary = run.summary
  fields = list(summary["sweep"])
  points, best = summary["points"], summary["best_point"]
  # A field swept over one value has no curve of its own; it still labels the others' lines.
  drawn = [path for path in fields if len(summary["sweep"][path]) > 1] or fields[:1]
  ylabel = "D4RL-normalised score" if summary["score_metric"] == "normalized_score" else "return"
  figure = Figure(figsize=(max(6.5, 5.0 * len(drawn)), 4.2), layout="constrained")
  panels = np.atleast_1d(figure.subplots(1, len(drawn)))
  for axes, field in zip(panels, drawn):
    others = [path for path in fields if path != field]
    settings = sorted({tuple(p["values"][path] for path in others) for p in points})
    for index, setting in enumerate(settings):
      line = sorted((p for p in points if tuple(p["values"][path] for path in others) == setting),
                    key=lambda p: p["values"][field])
      x = np.array([p["values"][field] for p in line])
      mean = np.array([p["mean"] for p in line])
      bands = np.array([bootstrap_interval(p["scores"]) for p in line])
      label = ", ".join(f"{path.rpartition('.')[2]}={value:g}" for path, value in zip(others, setting))
      axes.plot(x, mean, color=color(index), marker="o", label=label or f"{len(line[0]['scores'])} seeds")
      axes.fill_between(x, bands[:, 0], bands[:, 1], color=color(index), alpha=0.2, linewidth=0)
    champion = points[best]
    axes.plot([champion["values"][field]], [champion["mean"]], marker="*", markersize=16, color="gold",
              markeredgecolor="black", linestyle="none", label=f"best: {champion['label']}")
    values = np.array(summary["sweep"][field], np.float64)
    if np.all(values > 0) and values.max() / values.min() >= 10:
      axes.set_xscale("log")
    axes.set(xlabel=field.rpartition(".")[2], ylabel=f"final {ylabel}",
             title=f"vs {field.rpartition('.')[2]}, mean and 95% CI over seeds")
    axes.legend(fontsize="small")
  figure.suptitle(f"{run.label}: the final score of every sweep point")
  return figure


def score_metric(runs: list[Run]) -> str:
  """normalized_score where every run has it, return otherwise."""
  has_score = all(any("normalized_score" in r for r in run.records if r["phase"] == "eval")
                  for run in runs)
  return "normalized_score" if has_score else "return"


def q_curve(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
  """Q mean per epoch and seed, with the initial critic's as epoch 0."""
  return with_start(records, "q_mean", "critic_init")


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def scores_figure(runs: list[Run]) -> Figure:
  """Fig. 2: evaluation score over training, mean and std over seeds, one line per run."""
  metric = score_metric(runs)
  figure = Figure(figsize=(7.0, 4.5), layout="constrained")
  axes = figure.subplots()
  for index, run in enumerate(runs):
    epochs, values = per_epoch(run.records, "eval", metric)
    if epochs.size:
      mean_and_band(axes, epochs, values, color(index), run.label)
  ylabel = "D4RL-normalised score" if metric == "normalized_score" else "return"
  axes.set(xlabel="epoch", ylabel=ylabel, title=f"Evaluation {ylabel}: mean +- std over seeds")
  integer_epochs(axes)
  axes.legend(fontsize="small")
  return figure


def q_figure(runs: list[Run]) -> Figure:
  """Fig. 1 (right): the critic's average Q over training, one line per run."""
  figure = Figure(figsize=(7.0, 4.5), layout="constrained")
  axes = figure.subplots()
  for index, run in enumerate(runs):
    epochs, values = q_curve(run.records)
    if epochs.size:
      mean_and_band(axes, epochs, values, color(index), run.label)
  axes.set(xlabel="epoch (0: the initial critic)", ylabel="mean Q(s, a) at dataset actions",
           title="Average Q value over training: mean +- std over seeds")
  integer_epochs(axes)
  axes.legend(fontsize="small")
  return figure


def histogram_bins(values: list[np.ndarray], logarithmic: bool) -> tuple[np.ndarray, bool]:
  """(edges, whether they are logarithmic) shared by all runs' values; logarithmic where
  asked, every value is > 0 and they span more than a factor of 100."""
  pooled = np.concatenate([np.ravel(v) for v in values])
  pooled = pooled[np.isfinite(pooled)]
  low, high = float(np.min(pooled)), float(np.max(pooled))
  if logarithmic and low > 0.0 and high > 100.0 * low:
    return np.geomspace(low, high, HISTOGRAM_BINS + 1), True
  return np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1), False


def _divergence_name(run: Run) -> str:
  return "MMD(s)" if str(run.diagnostics["divergence_name"]) == "mmd" else "KL(s)"


def _divergence_axis_label(runs: list[Run]) -> str:
  names = sorted({_divergence_name(run) for run in runs})
  name = names[0] if len(names) == 1 else "KL(s), or MMD(s) for the MMD runs"
  return f"{name} of the final policy at every dataset state"


def kl_histogram_figure(runs: list[Run]) -> Figure:
  """Fig. 3: KL(s) at every dataset state, eps_KL marked; one panel per run, shared bins."""
  divergences = [run.diagnostics["divergence"] for run in runs]
  thresholds = [run.diagnostics["kl_threshold"] for run in runs]
  # KL(s) spans orders of magnitude where the policy leaves the data: logarithmic bins then.
  pooled = np.concatenate([d.ravel() for d in divergences])
  spread = np.percentile(pooled, 99.9) / max(np.percentile(pooled, 1.0), 1e-12)
  bins, logarithmic = histogram_bins(divergences + thresholds, logarithmic=spread > 100.0)
  figure = Figure(figsize=(7.0, 1.2 + 2.0 * len(runs)), layout="constrained")
  panels = np.atleast_1d(figure.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0])
  for index, (axes, run) in enumerate(zip(panels, runs)):
    divergence, eps_kl = run.diagnostics["divergence"], run.diagnostics["kl_threshold"]
    above = ", ".join(f"{100 * v:.0f}%" for v in np.mean(divergence > eps_kl[:, None], axis=1))
    axes.hist(divergence.ravel(), bins=bins, color=color(index), alpha=0.8,
              label=f"{run.label}: {divergence.shape[1]} states x {divergence.shape[0]} seeds; "
                    f"above eps_KL, per seed: {above}")
    for seed, value in enumerate(eps_kl):
      axes.axvline(value, color="black", linestyle="--", linewidth=1.0,
                   label=f"eps_KL = {', '.join(f'{v:.2f}' for v in eps_kl)}" if seed == 0 else None)
    for seed, value in enumerate(run.diagnostics["gp_threshold"]):
      axes.axvline(value, color="tab:red", linestyle=":", linewidth=1.0,
                   label="eps_GP (final)" if seed == 0 else None)
    axes.set_ylabel("states")
    axes.legend(fontsize="x-small", loc="upper right")
  if logarithmic:
    panels[-1].set_xscale("log")
  panels[-1].set_xlabel(_divergence_axis_label(runs))
  figure.suptitle("Divergence from the behaviour policy over the dataset (Fig. 3)")
  return figure


def ood_gradient_norms(run: Run) -> np.ndarray:
  """||grad_a Q|| at the policy's actions in the states beyond eps_GP, all seeds pooled."""
  return run.diagnostics["policy_action_gradient_norm"][run.diagnostics["ood"]]


def ood_figure(runs: list[Run]) -> Figure:
  """Fig. 6: ||grad_a Q|| at out-of-distribution actions, one histogram per run, overlaid."""
  norms = [ood_gradient_norms(run) for run in runs]
  figure = Figure(figsize=(7.0, 4.5), layout="constrained")
  axes = figure.subplots()
  nonempty = [n for n in norms if n.size]
  if nonempty:
    bins, logarithmic = histogram_bins(nonempty, logarithmic=True)
    for index, (run, values) in enumerate(zip(runs, norms)):
      if values.size:
        axes.hist(values, bins=bins, histtype="step", linewidth=1.5, color=color(index),
                  label=f"{run.label}: median {np.median(values):.3g} ({values.size} actions)")
    if logarithmic:
      axes.set_xscale("log")
  axes.set(xlabel=r"$\|\nabla_a Q(s, a)\|$, a ~ final policy, at states with KL(s) > eps_GP",
           ylabel="actions (all seeds)",
           title="Q's action gradient at out-of-distribution actions (Fig. 6)")
  axes.legend(fontsize="small")
  return figure


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------


def has_metric(runs: list[Run], phase: str, metric: str) -> bool:
  return any(metric in r for run in runs for r in run.records if r["phase"] == phase)


def _final_mean(records: list[dict[str, Any]], metric: str) -> str:
  epochs, values = per_epoch(records, "epoch", metric)
  return f"{np.nanmean(values[-1]):.3g}" if epochs.size else "n/a"


def _per_seed(values: np.ndarray) -> str:
  return " / ".join(f"{v:.3g}" for v in values) if values.size else "n/a"


def _critic_fit_cell(records: list[dict[str, Any]]) -> str:
  epochs, values = with_start(records, "q_mc_correlation", "critic_init")
  if not epochs.size:
    return "n/a"
  initial = f"{np.nanmean(values[0]):.2f}" if epochs[0] == 0 else "n/a"
  return f"{initial}, {np.nanmean(values[-1]):.2f}"


def _final_eval(records: list[dict[str, Any]], metric: str) -> str:
  epochs, values = per_epoch(records, "eval", metric)
  return _per_seed(values[-1]) if epochs.size else "n/a"


def run_table(runs: list[Run]) -> str:
  header = ["run", "seeds", "final return", "normalised score", "final Q mean",
            "mean KL(s) / eps_KL, last third", "share > 1.2 eps_KL, last third",
            "Q-MC correlation (initial, final)", "final Q over-estimation",
            "mean KL(s) (MMD runs: MMD(s))", "states over eps_KL", "median OOD grad norm"]
  rows = []
  for run in runs:
    result = result_row(run.label, run.summary) if run.summary else {
        "seeds": "n/a (unfinished)"}
    row = [run.label, str(result["seeds"]), mean_std(result, "return"),
           mean_std(result, "normalized_score"), _final_mean(run.records, "q_mean")]
    row += [_per_seed(last_third(run.records, "dataset_kl_over_threshold")),
            _per_seed(last_third(run.records, "dataset_kl_violation_fraction_1_2x")),
            _critic_fit_cell(run.records), _final_eval(run.records, "q_overestimation")]
    if run.diagnostics is not None:
      divergence, eps_kl = run.diagnostics["divergence"], run.diagnostics["kl_threshold"]
      norms = ood_gradient_norms(run)
      row += [f"{np.mean(divergence):.3g}", f"{100 * np.mean(divergence > eps_kl[:, None]):.1f}%",
              f"{np.median(norms):.3g}" if norms.size else "n/a"]
    else:
      row += ["n/a"] * 3
    rows.append(row)
  return markdown_table(header, rows)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def make_report(paths: list[str], out_dir: str) -> list[str]:
  """Draws the figures and the table of the named runs into out_dir; returns the files written."""
  if not paths:
    raise InputError("no run directories given; expected one or more runs or ablation directories")
  named = [read_run(label, run_dir) for label, run_dir in run_directories(paths)]
  sweeps = [run for run in named if run.summary and "points" in run.summary]
  runs = [point for run in named for point in sweep_points(run)]
  with_diagnostics = [run for run in runs if run.diagnostics is not None]
  for run in runs:
    if run.diagnostics is None:
      print(f"note: {run.run_dir} has no {DIAGNOSTICS_FILE}: {run.label} is left out of "
            f"{KL_FIGURE} and {OOD_FIGURE}")
  drawings = {SCORES_FIGURE: lambda: png_bytes(scores_figure(runs)),
              Q_FIGURE: lambda: png_bytes(q_figure(runs))}
  if has_metric(runs, "epoch", "dataset_alpha_above_threshold"):  # runs logged before have none
    drawings[MULTIPLIER_FIGURE] = lambda: png_bytes(multiplier_figure(runs))
  if has_metric(runs, "epoch", "q_mc_correlation"):
    drawings[CRITIC_FIGURE] = lambda: png_bytes(critic_figure(runs))
  if with_diagnostics:
    drawings[KL_FIGURE] = lambda: png_bytes(kl_histogram_figure(with_diagnostics))
    drawings[OOD_FIGURE] = lambda: png_bytes(ood_figure(with_diagnostics))
  drawings[TABLE] = lambda: run_table(runs).encode()
  for run in sweeps:
    name = SWEEP_FIGURE if len(sweeps) == 1 else f"sweep_{os.path.basename(run.run_dir)}.png"
    drawings[name] = lambda run=run: png_bytes(sweep_figure(run))
  outputs = new_file_paths(out_dir, drawings)
  for path, draw in zip(outputs, drawings.values()):
    write_new_file(path, draw())
  return outputs


def define_flags() -> None:
  """Only when run as a program: other modules define flags of the same names."""
  flags.DEFINE_string("out", None, "The folder to write the figures and table into; their files "
                      "must not exist yet.")


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  if not flags.FLAGS.out:
    raise InputError("--out: missing; expected the folder to write the figures into")
  if len(argv) < 2:
    print(__doc__, file=sys.stderr)
    sys.exit(2)
  for path in make_report(argv[1:], flags.FLAGS.out):
    print(f"wrote {path}")


if __name__ == "__main__":
  run_command(sys.modules[__name__])
