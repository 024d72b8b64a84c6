"""The figures of one or more runs that more than one study draws: the constraint per epoch
(the multiplier) and the critic against the data's Monte-Carlo returns."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np

from bracplus_jax.studies.run_files import Run, per_epoch, with_start


def integer_epochs(axes) -> None:
  axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def color(index: int) -> str:
  return f"C{index % 10}"


def mean_and_band(axes, epochs: np.ndarray, values: np.ndarray, color: str, label: str) -> None:
  mean, std = np.nanmean(values, axis=1), np.nanstd(values, axis=1)
  axes.plot(epochs, mean, color=color, marker="o", markersize=3,
            label=f"{label} ({values.shape[1]} seeds)")
  axes.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def multiplier_figure(runs: list[Run]) -> Figure:
  """The constraint per epoch: mean KL(s) / eps_KL and the share of states above 1.2 eps_KL;
  alpha(s) among the states above eps_KL (solid) and at or below it (dashed)."""
  figure = Figure(figsize=(12.0, 4.5), layout="constrained")
  kl_axes, alpha_axes = figure.subplots(1, 2)
  share_axes = kl_axes.twinx()
  for index, run in enumerate(runs):
    line_color = color(index)
    epochs, ratio = with_start(run.records, "dataset_kl_over_threshold", "start_rl")
    if epochs.size:
      mean_and_band(kl_axes, epochs, ratio, line_color, f"{run.label}: mean KL / eps_KL")
      _, share = with_start(run.records, "dataset_kl_violation_fraction_1_2x", "start_rl")
      share_axes.plot(epochs, np.nanmean(share, axis=1), color=line_color, linestyle=":",
                      label=f"{run.label}: share > 1.2 eps_KL")
    for metric, style, where in (("dataset_alpha_above_threshold", "-", "KL(s) > eps_KL"),
                                 ("dataset_alpha_below_threshold", "--", "KL(s) <= eps_KL")):
      epochs, alpha = with_start(run.records, metric, "start_rl")
      if epochs.size:
        alpha_axes.plot(epochs, np.nanmean(alpha, axis=1), color=line_color, linestyle=style,
                        marker="o", markersize=3, label=f"{run.label}: {where}")
  kl_axes.axhline(1.0, color="0.3", linewidth=1)
  kl_axes.axhline(1.2, color="0.3", linewidth=1, linestyle="--")
  kl_axes.set(xlabel="epoch (0: the initial policy)", ylabel="dataset mean KL(s) / eps_KL (mean +- std)",
              title="The constraint over every dataset state")
  share_axes.set_ylabel("share of states with KL(s) > 1.2 eps_KL (dotted)")
  share_axes.set_ylim(0.0, 1.0)
  alpha_axes.set(xlabel="epoch (0: the initial policy)", ylabel="mean alpha(s) (mean over seeds)",
                 yscale="log", title="alpha(s): where KL(s) > eps_KL (solid), elsewhere (dashed)")
  for axes in (kl_axes, alpha_axes):
    integer_epochs(axes)
    axes.legend(fontsize="x-small", loc="upper left")
  share_axes.legend(fontsize="x-small", loc="upper right")
  return figure


def critic_figure(runs: list[Run]) -> Figure:
  """Whether the critic can be trusted: its fit to the data's Monte-Carlo returns per epoch,
  and its over-estimation of the evaluated policy's discounted return from s0."""
  figure = Figure(figsize=(12.0, 4.5), layout="constrained")
  fit_axes, over_axes = figure.subplots(1, 2)
  for index, run in enumerate(runs):
    epochs, values = with_start(run.records, "q_mc_correlation", "critic_init")
    if epochs.size:
      mean_and_band(fit_axes, epochs, values, color(index), run.label)
    epochs, values = per_epoch(run.records, "eval", "q_overestimation")
    if epochs.size:
      mean_and_band(over_axes, epochs, values, color(index), run.label)
  over_axes.axhline(0.0, color="0.3", linewidth=1)
  fit_axes.set(xlabel="epoch (0: the initial critic)", ylabel="corr(min_j Q_j(s, a), Monte-Carlo return)",
               title="Critic against the data's discounted returns")
  over_axes.set(xlabel="epoch", ylabel="Q(s0, a0) - discounted return from s0",
                title="Over-estimation at evaluation (training reward units)")
  for axes in (fit_axes, over_axes):
    integer_epochs(axes)
    axes.legend(fontsize="small")
  return figure
