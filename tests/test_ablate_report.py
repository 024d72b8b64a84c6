"""Ablations and their report: one tiny ablation (kl and mmd, two seeds each) shared by every test,
checked against each variant's own summary.json and metrics.jsonl."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bracplus_jax import data  # noqa: E402
from bracplus_jax.collection import collect  # noqa: E402
from bracplus_jax.errors import InputError  # noqa: E402
from bracplus_jax.studies import ablate, report  # noqa: E402

TINY = {
    "behavior_steps": 40, "policy_init_steps": 20, "critic_init_steps": 20, "epochs": 2,
    "steps_per_epoch": 20, "batch_size": 32, "eval_episodes": 1, "eval_every": 1,
}
WIDTHS = ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def command(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
  """(parent directory, dataset path, the command's result) of `ablate --variants=kl,mmd,bc --seeds=2`."""
  root = tmp_path_factory.mktemp("ablation")
  dataset = str(root / "hopper_random.hdf5")
  collect.collect("Hopper-v5", "random", 600, dataset, seed=0, progress=False)
  overrides = [f"--config.{name}={value}" for name, value in TINY.items()]
  overrides += [f"--config.algo.{name}=(16,16)" for name in WIDTHS]
  result = command("bracplus_jax.ablate", "--config=configs/hopper_local.py", "--variants=kl,mmd,bc",
                   "--seeds=2", f"--workdir={root / 'runs'}", f"--config.dataset=hdf5:{dataset}",
                   "--config.wandb.mode=disabled", *overrides)
  assert result.returncode == 0, result.stderr[-3000:]
  return root / "runs", dataset, result


@pytest.fixture(scope="module")
def figures(ablation, tmp_path_factory):
  out = tmp_path_factory.mktemp("figures") / "report"
  return out, report.make_report([str(ablation[0])], str(out))


def records(run_dir):
  return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ablation_runs_every_variant_with_its_preset(ablation):
  parent, _, _ = ablation
  for variant in ("kl", "mmd"):
    config = json.loads((parent / variant / "config.json").read_text())
    assert config["num_seeds"] == 2 and config["algo"]["divergence"] == variant
    assert config["epochs"] == 2 and list(config["algo"]["critic_hidden_dims"]) == [16, 16]
    epochs = [r for r in records(parent / variant) if r["phase"] == "epoch"]
    assert sorted((r["epoch"], r["seed_index"]) for r in epochs) == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_the_bc_variant_clones_with_the_same_schedule_and_evaluation(ablation):
  parent, _, _ = ablation
  config = json.loads((parent / "bc" / "config.json").read_text())
  assert config["method"] == "bc" and config["num_seeds"] == 2
  rows = records(parent / "bc")
  # No start-up phase trains anything; every epoch is maximum likelihood of the data's actions.
  assert not [r for r in rows if r["phase"] in ("behavior", "policy_init", "critic_init")]
  epochs = [r for r in rows if r["phase"] == "epoch"]
  assert sorted((r["epoch"], r["seed_index"]) for r in epochs) == [(1, 0), (1, 1), (2, 0), (2, 1)]
  assert all(np.isfinite(r["bc_nll"]) for r in epochs)
  assert sorted((r["epoch"], r["seed_index"]) for r in rows if r["phase"] == "eval") == [
      (1, 0), (1, 1), (2, 0), (2, 1)]
  assert not (parent / "bc" / "diagnostics.npz").exists()
  # BRAC+ evaluates its initial policy as epoch 0, before the first RL epoch.
  assert sorted(r["epoch"] for r in records(parent / "kl") if r["phase"] == "eval") == [0, 0, 1, 1, 2, 2]


def test_ablation_table_holds_each_variants_summary(ablation):
  parent, _, result = ablation
  results = json.loads((parent / "ablation.json").read_text())
  assert [row["variant"] for row in results["variants"]] == ["kl", "mmd", "bc"]
  table = (parent / "ablation.md").read_text()
  for row in results["variants"]:
    summary = json.loads((parent / row["variant"] / "summary.json").read_text())
    returns, scores = np.array(summary["return"]), np.array(summary["normalized_score"])
    assert returns.shape == (2,)
    assert row["return_mean"] == pytest.approx(returns.mean())
    assert row["return_std"] == pytest.approx(returns.std())
    assert row["normalized_score_mean"] == pytest.approx(scores.mean())
    assert row["normalized_score_std"] == pytest.approx(scores.std())
    line = (f"| {row['variant']} | 2 | {returns.mean():.1f} +- {returns.std():.1f} | "
            f"{scores.mean():.1f} +- {scores.std():.1f} |")
    assert line in table and line in result.stdout


def test_diagnostics_cover_every_dataset_state_of_every_seed(ablation):
  parent, dataset, _ = ablation
  num_states = data.load_dataset(f"hdf5:{dataset}", progress=False).transitions.size
  for variant in ("kl", "mmd"):
    diagnostics = np.load(parent / variant / "diagnostics.npz")
    for name in ("divergence", "policy_action_gradient_norm", "uniform_action_gradient_norm", "ood"):
      assert diagnostics[name].shape == (2, num_states), name
    assert np.all(np.isfinite(diagnostics["divergence"]))
    assert np.all(diagnostics["policy_action_gradient_norm"] >= 0.0)
    final = {r["seed_index"]: r for r in records(parent / variant)
             if r["phase"] == "epoch" and r["epoch"] == 2}
    np.testing.assert_allclose(diagnostics["kl_threshold"], [final[0]["kl_threshold"],
                                                             final[1]["kl_threshold"]], rtol=1e-6)
    np.testing.assert_array_equal(
        diagnostics["ood"], diagnostics["divergence"] > diagnostics["gp_threshold"][:, None])
    assert str(diagnostics["divergence_name"]) == variant


def test_report_draws_every_figure_and_the_table(ablation, figures):
  parent, _, _ = ablation
  out, written = figures
  names = ["scores.png", "q_values.png", "multiplier.png", "critic.png", "kl_histogram.png",
           "ood_gradients.png", "table.md"]
  assert sorted(written) == sorted(str(out / name) for name in names)
  for name in names[:6]:
    content = (out / name).read_bytes()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 10_000, name
  table = (out / "table.md").read_text()
  results = json.loads((parent / "ablation.json").read_text())["variants"]
  for row in results:
    assert (f"| {row['variant']} | 2 | {row['return_mean']:.1f} +- {row['return_std']:.1f} | "
            f"{row['normalized_score_mean']:.1f} +- {row['normalized_score_std']:.1f} |") in table


def test_the_table_gives_the_constraint_over_the_last_third_and_the_critic_s_checks(ablation, figures):
  # From metrics.jsonl by hand: each seed's mean of the dataset figures over the epochs past
  # two thirds of the run, the initial and final Q-MC correlation, the last over-estimation.
  parent, _, _ = ablation
  out, _ = figures
  records = [json.loads(line) for line in (parent / "kl" / "metrics.jsonl").read_text().splitlines()]
  epochs = [r for r in records if r["phase"] == "epoch"]
  last_epoch = max(r["epoch"] for r in epochs)
  late = [r for r in epochs if r["epoch"] > 2 * last_epoch / 3]
  ratio = " / ".join(f"{np.mean([r['dataset_kl_over_threshold'] for r in late if r['seed_index'] == s]):.3g}"
                     for s in (0, 1))
  initial = np.mean([r["q_mc_correlation"] for r in records if r["phase"] == "critic_init"])
  final = np.mean([r["q_mc_correlation"] for r in epochs if r["epoch"] == last_epoch])
  row = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("| kl |"))
  assert f"| {ratio} |" in row and f"| {initial:.2f}, {final:.2f} |" in row


def test_report_never_overwrites_a_file(ablation, figures):
  parent, _, _ = ablation
  out, _ = figures
  before = (out / "scores.png").read_bytes()
  with pytest.raises(InputError, match="never overwritten"):
    report.make_report([str(parent)], str(out))
  assert (out / "scores.png").read_bytes() == before


def test_a_run_without_diagnostics_skips_the_histograms(ablation, tmp_path, capsys):
  parent, _, _ = ablation
  run = tmp_path / "run"
  run.mkdir()
  for name in ("config.json", "metrics.jsonl", "summary.json"):
    (run / name).write_bytes((parent / "kl" / name).read_bytes())
  written = report.make_report([str(run)], str(tmp_path / "out"))
  assert sorted(pathlib.Path(p).name for p in written) == [
      "critic.png", "multiplier.png", "q_values.png", "scores.png", "table.md"]
  assert "no diagnostics.npz" in capsys.readouterr().out


def test_unknown_variant_is_one_line_before_anything_runs(tmp_path):
  result = command("bracplus_jax.ablate", "--config=configs/hopper_local.py",
                   "--variants=kl,no_such", f"--workdir={tmp_path / 'runs'}")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "no_such" in lines[0]
  assert all(name in lines[0] for name in ablate.VARIANTS)
  assert not (tmp_path / "runs").exists()


def test_variants_apply_their_presets_to_a_copy():
  from bracplus_jax.configs import base
  config = base.gym_task("hopper", "mixed")
  assert ablate.variant_config(config, "global_alpha", 3).algo.alpha == "global"
  assert ablate.variant_config(config, "no_gp", 3).algo.gp_weighting == "off"
  assert ablate.variant_config(config, "soft_gp", 3).algo.gp_weighting == "soft"
  released = ablate.variant_config(config, "released", 3)
  assert released.algo.td_backup == "max" and released.num_seeds == 3
  assert config.algo.alpha == "state" and config.num_seeds == 1 and config.algo.td_backup == "expected"
  with pytest.raises(InputError, match="given twice"):
    ablate.parse_variants("kl,kl")
