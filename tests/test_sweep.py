"""Hyper-parameter sweeps in one compiled program: the grid, its equality with separate runs,
one compile per step, per-point outputs, W&B runs per point, refusals and the report."""

import json
import re
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bracplus_jax.configs import base  # noqa: E402

from bracplus_jax import experiment, sweep  # noqa: E402
from bracplus_jax.errors import InputError  # noqa: E402
from bracplus_jax.studies import report  # noqa: E402
from test_experiment import hopper_file  # noqa: E402,F401  (the module's fixture)
from test_experiment import tiny_config as experiment_tiny_config  # noqa: E402

def tiny_config(dataset, num_seeds=2, **algo):
  """test_experiment's tiny run with `num_seeds` seeds and these algo fields."""
  config = experiment_tiny_config(dataset)
  for name, value in algo.items():
    config.algo[name] = value
  config.num_seeds = num_seeds
  return config


def epoch_records(run_dir, **match):
  records = [json.loads(line) for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
  return [r for r in records if r["phase"] == "epoch" and all(r.get(k) == v for k, v in match.items())]


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------


def test_the_grid_is_the_product_of_the_swept_values_and_each_point_gets_every_seed():
  config = base.gym_task("hopper", "mixed")
  config.num_seeds = 2
  config.sweep.algo.kl_margin = (0.5, 1.0, 3.0)
  config.sweep.algo.tau = (0.005, 0.001)
  assert sweep.swept_fields(config) == {"algo.kl_margin": (0.5, 1.0, 3.0), "algo.tau": (0.005, 0.001)}
  points = sweep.grid(config)
  assert points == [{"algo.kl_margin": m, "algo.tau": t} for m in (0.5, 1.0, 3.0) for t in (0.005, 0.001)]
  assert sweep.num_runs(config) == 12
  values = sweep.run_values(config)
  # run r = point r // seeds: each point's value repeated once per seed
  np.testing.assert_allclose(values["kl_margin"], np.repeat([0.5, 0.5, 1.0, 1.0, 3.0, 3.0], 2))
  np.testing.assert_allclose(values["tau"], np.repeat([0.005, 0.001] * 3, 2), rtol=1e-6)
  single = sweep.point_config(config, points[3])
  assert single.algo.kl_margin == 1.0 and single.algo.tau == 0.001
  assert sweep.swept_fields(single) == {}
  assert sweep.point_label(points[3]) == "kl_margin=1,tau=0.001"


def test_point_summaries_match_numpy():
  scores = np.array([[1.0, 2.0, 3.0, 10.0], [4.0, 4.0, 5.0, 6.0]])
  rows = sweep.point_summaries(scores, [{"algo.tau": 0.1}, {"algo.tau": 0.2}])
  for row, expected in zip(rows, scores):
    assert row["mean"] == pytest.approx(expected.mean()) and row["std"] == pytest.approx(expected.std())
    middle = np.sort(expected)[1:3]  # the middle 50% of 4 scores
    assert row["iqm"] == pytest.approx(middle.mean())


@pytest.mark.parametrize("field, value, words", [
    ("policy_hidden_dims", ((16,), (32,)), "changes array shapes"),
    ("kl_policy_samples", (1, 5), "changes array shapes"),
    ("divergence", ("kl", "mmd"), "chooses a code path"),
    ("alpha_lr", (1e-3, 1e-4), "no effect with algo.alpha = 'state'"),
    ("gp_lambda", (0.1, 1.0), None),  # allowed: gp_lagrange is off in the paper config
    ("alpha_dual_state_gain", (1.0, 30.0), "no effect with algo.alpha_dual_gain = 'rows'"),
    ("alpha_dual_row_step", (0.1, 0.3), None),
    ("alpha_max", (10.0, 100.0), "static clips"),
    ("gamma", (0.99, 1.5), "expected a number in [0, 1]"),
    ("kl_margin", (0.5, 0.5), "distinct values"),
])
def test_only_fields_that_keep_shapes_and_code_paths_can_be_swept(field, value, words):
  config = base.gym_task("hopper", "mixed")
  config.sweep.algo[field] = value
  if words is None:
    from bracplus_jax import config as config_lib
    config_lib.validate(config)
    return
  with pytest.raises(InputError, match=re.escape(words)) as error:
    from bracplus_jax import config as config_lib
    config_lib.validate(config)
  assert str(error.value).startswith(f"config.sweep.algo.{field}") and "\n" not in str(error.value)


def test_a_sweep_over_a_shape_changing_field_is_refused_with_one_line_before_compiling(tmp_path):
  result = subprocess.run(
      [sys.executable, str(ROOT / "launch.py"), "--config=configs/hopper_mixed.py",
       "--config.sweep.algo.policy_hidden_dims=((16,16),(32,32))", f"--workdir={tmp_path / 'run'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: config.sweep.algo.policy_hidden_dims cannot be swept")
  assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# One program, the same results as separate runs
# ---------------------------------------------------------------------------


def test_a_two_point_sweep_equals_the_two_separate_runs_and_compiles_each_step_once(hopper_file, tmp_path):
  margins, policy_lr = (0.2, 2.0), 3e-4
  config = tiny_config(hopper_file, policy_lr=policy_lr)
  config.sweep.algo.kl_margin = margins
  config.sweep.algo.policy_lr = (policy_lr,)  # a swept learning rate goes through the optimiser state
  swept = experiment.Experiment(config, str(tmp_path / "sweep"), progress=False)
  summary = swept.run()
  for scan in swept.trainer._scans.values():
    assert scan._cache_size() == 1  # one compile per step, whatever the number of points

  assert [p["values"] for p in summary["points"]] == [
      {"algo.kl_margin": m, "algo.policy_lr": policy_lr} for m in margins]
  for point, margin in enumerate(margins):
    alone = experiment.run(tiny_config(hopper_file, kl_margin=margin, policy_lr=policy_lr),
                           str(tmp_path / f"alone{point}"), progress=False)
    row = summary["points"][point]
    np.testing.assert_allclose(row["return"], alone["return"], rtol=1e-3)
    assert row["scores"] == row["normalized_score"]
    for seed_index in range(2):
      ours = epoch_records(tmp_path / "sweep", point=point, seed_index=seed_index)
      theirs = epoch_records(tmp_path / f"alone{point}", seed_index=seed_index)
      assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs] == [1, 2]
      for mine, other in zip(ours, theirs):
        assert mine["sweep/algo.kl_margin"] == margin
        for name in ("kl_threshold", "td_loss", "actor_loss", "kl_mean", "alpha", "gp_threshold"):
          np.testing.assert_allclose(mine[name], other[name], rtol=2e-3, atol=1e-5, err_msg=name)
  # The margins set eps_KL apart by exactly their difference.
  first, second = (epoch_records(tmp_path / "sweep", point=p, seed_index=0)[0]["kl_threshold"] for p in (0, 1))
  assert second - first == pytest.approx(margins[1] - margins[0], rel=1e-4)


def test_swept_initial_values_and_learning_rates_reach_each_run_s_state(hopper_file):
  from bracplus_jax import data, train
  config = tiny_config(hopper_file)
  config.sweep.algo.alpha_init = (1.0, 30.0)
  config.sweep.algo.entropy_init = (0.5, 2.0)
  config.sweep.algo.critic_lr = (1e-4, 1e-3)
  dataset = data.load_dataset(config.dataset, env_id=config.env)
  trainer = train.Trainer(config, dataset, progress=False)
  state, _ = trainer.initial()
  algorithm = trainer.algorithm
  observations = dataset.transitions.observations[:5]
  values = sweep.run_values(config)
  import jax
  alpha = jax.vmap(lambda p: algorithm.alpha.apply(p, observations))(state.alpha.params)
  np.testing.assert_allclose(alpha, np.broadcast_to(values["alpha_init"][:, None], alpha.shape), rtol=1e-5)
  beta = jax.vmap(algorithm.entropy.apply)(state.entropy.params)
  np.testing.assert_allclose(beta, values["entropy_init"], rtol=1e-5)
  np.testing.assert_allclose(state.critic.opt_state.hyperparams["learning_rate"], values["critic_lr"])
  assert trainer.num_runs == 2 * 2 * 2 * 2


# ---------------------------------------------------------------------------
# W&B and the report
# ---------------------------------------------------------------------------


def test_each_point_is_one_wandb_run_in_one_group_and_the_report_draws_the_sweep(hopper_file, tmp_path):
  config = tiny_config(hopper_file, num_seeds=2)
  config.sweep.algo.kl_margin = (0.2, 1.0, 3.0)
  config.wandb.mode = "offline"
  config.epochs, config.eval_every = 1, 1
  summary = experiment.run(config, str(tmp_path / "run"), progress=False)
  runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
  assert len(runs) == 3
  ids = json.loads((tmp_path / "run" / "wandb_runs.json").read_text())
  assert sorted(run.name.rsplit("-", 1)[1] for run in runs) == sorted(ids)
  assert summary["best_point"] == int(np.argmax([p["mean"] for p in summary["points"]]))

  written = report.make_report([str(tmp_path / "run")], str(tmp_path / "report"))
  names = {pathlib.Path(path).name for path in written}
  assert report.SWEEP_FIGURE in names and report.SCORES_FIGURE in names
  table = (tmp_path / "report" / report.TABLE).read_text()
  for label in ("kl_margin=0.2", "kl_margin=1", "kl_margin=3"):
    assert label in table  # one row per point


def test_a_stopped_sweep_resumes_to_the_uninterrupted_result(hopper_file, tmp_path, monkeypatch):
  config = tiny_config(hopper_file)
  config.sweep.algo.tau = (0.005, 0.02)
  config.checkpoint_every = 1
  whole = experiment.run(config, str(tmp_path / "whole"), progress=False)

  real_after_unit = experiment.Experiment._after_unit

  def stop_after_first_epoch(self, unit, state, keys, result, seconds):
    real_after_unit(self, unit, state, keys, result, seconds)
    if result.epoch == 1:
      raise KeyboardInterrupt

  monkeypatch.setattr(experiment.Experiment, "_after_unit", stop_after_first_epoch)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(config, str(tmp_path / "stopped"), progress=False)
  monkeypatch.setattr(experiment.Experiment, "_after_unit", real_after_unit)
  resumed = experiment.run(None, str(tmp_path / "stopped"), resume=True, progress=False)
  assert resumed["points"] == whole["points"]
  assert epoch_records(tmp_path / "stopped") == epoch_records(tmp_path / "whole")
