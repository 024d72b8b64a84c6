"""Training runs end to end: launch.py, summaries for many seeds, resume, sharding, NaN stops,
and every bad input stopped with one line before anything compiles."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bracplus_jax.configs import base  # noqa: E402

from bracplus_jax import data, experiment  # noqa: E402
from bracplus_jax.collection import collect, sac  # noqa: E402
from conftest import write_d4rl_file  # noqa: E402

TINY = {
    "behavior_steps": 40, "policy_init_steps": 20, "critic_init_steps": 20, "epochs": 2,
    "steps_per_epoch": 20, "batch_size": 32, "eval_episodes": 1, "eval_every": 1,
}


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data") / "hopper_random.hdf5")
  collect.collect("Hopper-v5", "random", 600, path, seed=0, progress=False)
  return path


def tiny_config(dataset, **overrides):
  config = base.gym_task("hopper", "mixed")
  config.dataset = f"hdf5:{dataset}"
  for name in ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims"):
    config.algo[name] = (16, 16)
  for name, value in {**TINY, **overrides}.items():
    config[name] = value
  config.wandb.mode = "disabled"
  return config


def launch(*args, env=None):
  return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True,
                        text=True, cwd=ROOT, timeout=600, env={**os.environ, **(env or {})})


def test_launch_trains_four_seeds_and_writes_their_results(hopper_file, tmp_path):
  flags = [f"--config.{name}={value}" for name, value in TINY.items()]
  widths = [f"--config.algo.{name}=(16,16)" for name in
            ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims")]
  result = launch("--config=configs/hopper_mixed.py", f"--config.dataset=hdf5:{hopper_file}",
                  "--config.num_seeds=4", "--config.wandb.mode=disabled", *flags, *widths,
                  f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["seeds"] == [0, 1, 2, 3]
  assert len(summary["return"]) == 4 and len(summary["normalized_score"]) == 4
  assert summary["return_mean"] == pytest.approx(np.mean(summary["return"]))
  assert summary["normalized_score_std"] == pytest.approx(np.std(summary["normalized_score"]))
  assert summary["dataset"] == f"hdf5:{hopper_file}"
  assert set(summary["phase_seconds"]) >= {"behavior", "policy_init", "critic_init", "rl", "evaluation"}
  assert "mean +- std" in result.stdout
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  epochs = [r for r in records if r["phase"] == "epoch"]
  assert sorted((r["epoch"], r["seed_index"]) for r in epochs) == [(e, s) for e in (1, 2) for s in range(4)]
  assert all(np.isfinite(r["td_loss"]) for r in epochs)
  # The critic's checks: its Monte-Carlo fit after its start-up phase and every epoch, and its
  # over-estimation at every evaluation (Q at the first step against the discounted return).
  for record in epochs + [r for r in records if r["phase"] == "critic_init"]:
    assert -1.0 <= record["q_mc_correlation"] <= 1.0 and np.isfinite(record["q_mc_mean_error"])
  for record in (r for r in records if r["phase"] == "eval"):
    assert record["q_overestimation"] == pytest.approx(record["q_initial"] - record["discounted_return"])
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["num_seeds"] == 4 and config["name"] == "hopper_mixed"

  # The saved policies evaluate again from the run directory: same episodes, same returns.
  again = subprocess.run([sys.executable, "-m", "bracplus_jax.evaluate", str(tmp_path / "run"),
                          "--episodes=1", f"--seed={0 * 100_003 + 2}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  lines = again.stdout.strip().splitlines()
  assert len(lines) == 5 and lines[0].startswith("seed 0: return")
  for index, line in enumerate(lines[:4]):
    assert f"return {summary['return'][index]:.1f}" in line


def test_an_existing_run_directory_is_never_overwritten_and_wandb_offline_writes_locally(hopper_file, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine")
  config = tiny_config(hopper_file, epochs=0, eval_episodes=0)
  config.wandb.mode = "offline"  # W&B writes its run files locally, beside ours
  summary = experiment.run(config, str(workdir), progress=False)
  assert summary["run_dir"] == f"{workdir}-2"
  assert (workdir / "notes.txt").read_text() == "mine" and len(os.listdir(workdir)) == 1
  wandb_runs = list((tmp_path / "run-2" / "wandb").glob("offline-run-*"))
  assert len(wandb_runs) == 1 and (tmp_path / "run-2" / "metrics.jsonl").exists()


def test_a_missing_dataset_is_made_with_a_sac_recipe(tmp_path, monkeypatch):
  # The collector's SAC, on a budget a test can afford.
  monkeypatch.setattr(collect, "DEFAULT_SAC", sac.SACConfig(
      total_steps=1_000, hidden_dims=(16, 16), start_steps=500, chunk_steps=250, eval_every=250,
      eval_episodes=1))
  path = tmp_path / "generated" / "Hopper-v5_mixed.hdf5"
  config = tiny_config(str(path), epochs=0, eval_episodes=0)
  config.make_dataset.recipe, config.make_dataset.steps = "mixed", 300
  experiment.run(config, str(tmp_path / "run"), progress=False)
  metadata = data.read_raw(f"hdf5:{path}").metadata
  assert metadata["recipe"] == "mixed" and metadata["sac/steps"] == 1_000
  assert 0 < metadata["steps"] <= metadata["medium_policy_step"]  # the replay buffer up to medium
  assert os.path.isfile(os.path.join(collect.sac_run_dir(str(tmp_path / "generated"), "Hopper-v5", 0),
                                     sac.RUN_FILE))


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(hopper_file, tmp_path, monkeypatch):
  config = tiny_config(hopper_file, epochs=3, checkpoint_every=1)
  whole = experiment.run(config, str(tmp_path / "whole"), progress=False)

  real_after_unit = experiment.Experiment._after_unit

  def stop_after_first_epoch(self, unit, state, keys, result, seconds):
    real_after_unit(self, unit, state, keys, result, seconds)
    if result.epoch == 1:
      raise KeyboardInterrupt  # as if the user pressed Ctrl-C

  monkeypatch.setattr(experiment.Experiment, "_after_unit", stop_after_first_epoch)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(config, str(tmp_path / "stopped"), progress=False)
  monkeypatch.setattr(experiment.Experiment, "_after_unit", real_after_unit)
  assert not (tmp_path / "stopped" / "summary.json").exists()

  resumed = experiment.run(None, str(tmp_path / "stopped"), resume=True, progress=False)
  assert resumed["return"] == whole["return"]
  assert resumed["gradient_steps_per_seed"] == whole["gradient_steps_per_seed"]

  def last_epoch(run):
    lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["phase"] == "epoch" and r["epoch"] == 3]

  assert last_epoch("stopped") == last_epoch("whole")


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start_in_place(
    hopper_file, tmp_path, monkeypatch):
  config = tiny_config(hopper_file, epochs=1)
  whole = experiment.run(config, str(tmp_path / "whole"), progress=False)

  def stop_at_once(self, unit, state, keys, result, seconds):
    raise KeyboardInterrupt  # before anything is logged or saved

  real_after_unit = experiment.Experiment._after_unit
  monkeypatch.setattr(experiment.Experiment, "_after_unit", stop_at_once)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(config, str(tmp_path / "stopped"), progress=False)
  monkeypatch.setattr(experiment.Experiment, "_after_unit", real_after_unit)
  (tmp_path / "stopped" / "notes.txt").write_text("the user's")

  resumed = experiment.run(None, str(tmp_path / "stopped"), resume=True, progress=False)
  assert resumed["run_dir"] == str(tmp_path / "stopped")
  assert resumed["return"] == whole["return"]
  assert (tmp_path / "stopped" / "notes.txt").read_text() == "the user's"


def test_a_nan_stops_the_run_naming_metric_seed_and_phase(tmp_path):
  rng = np.random.default_rng(0)
  rows = 200
  path = write_d4rl_file(
      tmp_path / "huge.hdf5", observations=rng.normal(size=(rows, 11)).astype(np.float32),
      actions=rng.uniform(-1, 1, size=(rows, 3)).astype(np.float32),
      rewards=np.full(rows, 3e38, np.float32), terminals=np.zeros(rows, bool),
      timeouts=np.zeros(rows, bool), next_observations=rng.normal(size=(rows, 11)).astype(np.float32))
  config = tiny_config(path, scale_rewards=False)
  with pytest.raises(experiment.RunError) as error:
    experiment.run(config, str(tmp_path / "run"), progress=False)
  message = str(error.value)
  assert "became" in message and "seed 0" in message and "critic_init phase" in message
  assert "last good checkpoint" in message
  assert os.listdir(tmp_path / "run" / "checkpoints")  # the start-up phases before it are kept


SHARDING_SCRIPT = """
import json, sys
sys.path[:0] = [{root!r}, {tests!r}]
import jax, numpy as np
from test_experiment import tiny_config
from bracplus_jax import data, train
config = tiny_config({dataset!r}, num_seeds=4, epochs=1)
trainer = train.Trainer(config, data.load_dataset(config.dataset, progress=False), progress=False)
state, _ = trainer.run()
leaf = jax.tree.leaves(state.critic.params)[0]
print(json.dumps({{"devices": len(leaf.sharding.device_set),
                   "sharded": trainer.sharding is not None,
                   "critic": [float(x) for x in np.asarray(leaf).reshape(4, -1)[:, 0]]}}))
"""


def test_seeds_shard_over_devices_with_the_same_results(hopper_file):
  script = SHARDING_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), dataset=hopper_file)

  def run_with(device_count):
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={device_count}"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=600, env={**os.environ, "XLA_FLAGS": flags})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])

  sharded, single = run_with(4), run_with(1)
  assert sharded["sharded"] and sharded["devices"] == 4
  assert not single["sharded"] and single["devices"] == 1
  np.testing.assert_allclose(sharded["critic"], single["critic"], rtol=1e-4, atol=1e-5)


def assert_one_line_error(result, *fragments):
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def test_bad_inputs_get_one_line_before_any_compile(hopper_file, tmp_path):
  (tmp_path / "no_get_config.py").write_text("x = 1\n")
  a_file = tmp_path / "a_file"
  a_file.write_text("not a folder")
  cases = [
      (["--config=configs/no_such_task.py"], ["configs/no_such_task.py"]),
      ([f"--config={tmp_path / 'no_get_config.py'}"], ["get_config"]),
      (["--config=configs/halfcheetah_mixed.py", f"--config.dataset=hdf5:{hopper_file}"],
       ["HalfCheetah-v5", "(17,)"]),
      (["--config=configs/hopper_mixed.py", "--config.env=Hoppr-v5"], ["config.env", "Hoppr-v5"]),
      (["--config=configs/hopper_mixed.py", "--config.num_seeds=0"], ["config.num_seeds = 0"]),
      (["--config=configs/hopper_mixed.py", "--config.algo.divergence=js"], ["config.algo.divergence", "kl, mmd"]),
      (["--config=configs/hopper_mixed.py", "--config.no_such_field=1"], ["no_such_field"]),
      (["--config=configs/hopper_mixed.py", f"--config.dataset=hdf5:{hopper_file}",
        f"--workdir={a_file / 'run'}"], ["--workdir", str(a_file)]),
      (["--resume", f"--workdir={tmp_path / 'never_ran'}"], ["--resume", "never_ran"]),
      (["--config=configs/hopper_local.py:replay"], ["configs/hopper_local.py", "'replay'", "mixed"]),
      (["--config=configs/hopper_local.py", "--config.make_dataset.recipe=replay"],
       ["config.make_dataset.recipe", "medium_expert"]),
      (["--config=configs/hopper_mixed.py", "--config.env=gym:Hopper-v1"], ["config.env", "gym:Hopper-v1"]),
  ]
  for args, fragments in cases:
    assert_one_line_error(launch(*args), *fragments)
