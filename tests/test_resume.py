"""Runs resume from any point: inside a start-up phase, and before their first checkpoint,
including after SIGKILL, to exactly the result an uninterrupted run has."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bracplus_jax.configs import base  # noqa: E402

from bracplus_jax import checkpoints, evaluate, experiment  # noqa: E402
from test_experiment import hopper_file  # noqa: E402,F401  (the module's fixture)

# Tiny networks; a behaviour phase of 30 blocks of 10 steps with a checkpoint every 3 blocks.
FLAGS = {
    "behavior_steps": 300, "policy_init_steps": 20, "critic_init_steps": 20, "epochs": 2,
    "steps_per_epoch": 20, "batch_size": 32, "eval_episodes": 1, "eval_every": 1,
    "block_steps": 10, "checkpoint_every_blocks": 3, "wandb.mode": "disabled",
    **{f"algo.{name}": (16, 16) for name in
       ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims")},
}


def command(dataset, workdir, resume=False):
  args = [sys.executable, str(ROOT / "launch.py"), f"--workdir={workdir}"]
  if resume:
    return args + ["--resume"]
  return args + ["--config=configs/hopper_mixed.py", f"--config.dataset=hdf5:{dataset}"] + [
      f"--config.{name}={value}".replace(" ", "") for name, value in FLAGS.items()]


def finish(args):
  result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def kill_when(args, ready, timeout=300):
  """Starts the command and SIGKILLs it as soon as ready() holds (polled every 5 ms)."""
  process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  began = time.monotonic()
  try:
    while not ready():
      assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
      assert time.monotonic() - began < timeout
      time.sleep(0.005)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()


def saved_progress(run_dir):
  """The progress records of the run's finished checkpoints, oldest first."""
  directory = run_dir / "checkpoints"
  numbers = sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if directory.exists() else []
  checkpointer = checkpoints.Checkpointer(str(directory))
  try:
    return [checkpointer.progress(number) for number in numbers]
  finally:
    checkpointer.close()


def results(run_dir):
  summary = json.loads((run_dir / "summary.json").read_text())
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  return summary["return"], summary["gradient_steps_per_seed"], records


@pytest.fixture(scope="module")
def uninterrupted(hopper_file, tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("runs") / "whole"
  finish(command(hopper_file, run_dir))
  return results(run_dir)


def test_a_run_killed_inside_the_behaviour_phase_resumes_to_the_uninterrupted_result(
    hopper_file, uninterrupted, tmp_path):
  run_dir = tmp_path / "killed"

  def mid_phase_checkpoint():
    directory = run_dir / "checkpoints"
    return directory.exists() and any(name.isdigit() for name in os.listdir(directory))

  kill_when(command(hopper_file, run_dir), mid_phase_checkpoint)
  progress = saved_progress(run_dir)
  assert progress and progress[-1]["completed_units"] == 0  # still in the behaviour phase
  assert 0 < progress[-1]["unit_blocks_done"] < 30
  assert not (run_dir / "summary.json").exists()

  resumed = finish(command(hopper_file, run_dir, resume=True))
  assert "resuming" in resumed.stdout and "block" in resumed.stdout
  assert results(run_dir) == uninterrupted


def test_a_run_killed_before_its_first_checkpoint_resumes_to_the_uninterrupted_result(
    hopper_file, uninterrupted, tmp_path):
  run_dir = tmp_path / "killed"
  kill_when(command(hopper_file, run_dir), lambda: (run_dir / "config.json").exists())
  assert saved_progress(run_dir) == []
  (run_dir / "notes.txt").write_text("the user's")

  resumed = finish(command(hopper_file, run_dir, resume=True))
  assert "no checkpoint yet" in resumed.stdout
  assert results(run_dir) == uninterrupted
  assert (run_dir / "notes.txt").read_text() == "the user's"


def test_lines_logged_after_the_last_checkpoint_are_not_logged_twice(hopper_file, tmp_path, monkeypatch):
  config = experiment_config(hopper_file)
  real_after_unit = experiment.Experiment._after_unit

  def stop_after_logging_epoch_one(self, unit, state, keys, result, seconds):
    if result.epoch == 1:
      self.log.log(result.name, self.gradient_steps + result.gradient_steps, result.metrics, result.epoch)
      raise KeyboardInterrupt  # logged, but stopped before its checkpoint
    real_after_unit(self, unit, state, keys, result, seconds)

  monkeypatch.setattr(experiment.Experiment, "_after_unit", stop_after_logging_epoch_one)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(config, str(tmp_path / "stopped"), progress=False)
  monkeypatch.setattr(experiment.Experiment, "_after_unit", real_after_unit)
  experiment.run(None, str(tmp_path / "stopped"), resume=True, progress=False)

  records = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
  epochs = [(r["epoch"], r["seed_index"]) for r in records if r["phase"] == "epoch"]
  assert epochs == [(1, 0), (2, 0)]
  superseded = (tmp_path / "stopped" / "metrics.superseded.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in superseded] == [1]


# A run written by the code at 6fb9a0e, before the modules moved into collection/ and studies/,
# stopped after its first RL epoch of three (tests/fixtures/make_old_run.py): its checkpoint's
# networks as that code restored them, and the lines the same run logs when not stopped.
OLD_RUN = ROOT / "tests" / "fixtures" / "old_run"
OLD_RUN_UNITS = 6 + 3  # the start-up stages, then the epochs


def flat(tree, prefix):
  """{'policy/params/trunk/Dense_0/kernel': array, ...}"""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join([prefix, *(str(getattr(key, "key", key)) for key in path)]): np.asarray(leaf)
          for path, leaf in leaves}


def schedule(records):
  """What a run logs, line by line, whatever the metrics: phase, epoch, seed and step."""
  return [(r["phase"], r.get("epoch"), r["seed_index"], r["step"]) for r in records]


def test_a_run_directory_written_before_the_package_moved_restores_and_resumes(tmp_path):
  shutil.copytree(OLD_RUN, tmp_path, dirs_exist_ok=True)
  run_dir = tmp_path / "run"
  config = json.loads((run_dir / "config.json").read_text())
  config["dataset"] = f"hdf5:{tmp_path / 'hopper_random.hdf5'}"  # it named the folder it was made in
  (run_dir / "config.json").write_text(json.dumps(config, indent=2))
  before = (run_dir / "metrics.jsonl").read_text().splitlines()

  _, _, state = evaluate.restore_run(str(run_dir))
  restored = flat(state.policy.params, "policy") | flat(state.critic.params, "critic")
  with np.load(OLD_RUN / "networks.npz") as saved:
    assert sorted(restored) == sorted(saved.files)
    for name in saved.files:
      np.testing.assert_array_equal(restored[name], saved[name], err_msg=name)

  resumed = finish(command(None, run_dir, resume=True))
  assert f"after unit 7 of {OLD_RUN_UNITS}" in resumed.stdout  # from its checkpoint, not from the start
  assert json.loads((run_dir / "summary.json").read_text())["gradient_steps_per_seed"] == 40 + 20 + 20 + 3 * 10
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  assert lines[:len(before)] == before
  uninterrupted = (OLD_RUN / "uninterrupted.jsonl").read_text().splitlines()
  assert schedule(map(json.loads, lines)) == schedule(map(json.loads, uninterrupted))


def experiment_config(dataset):
  config = base.gym_task("hopper", "mixed")
  config.dataset = f"hdf5:{dataset}"
  for name, value in FLAGS.items():
    parent, _, field = name.rpartition(".")
    (config[parent] if parent else config)[field] = value
  config.checkpoint_every = 1
  return config


def test_a_run_file_is_never_left_half_written(tmp_path, monkeypatch):
  # A run killed while writing config.json or summary.json must leave the previous file (or
  # none), which a resume can read: the JSON goes to a side file that is renamed into place.
  path = tmp_path / "config.json"
  experiment.write_json_atomically(str(path), {"a": 1})

  def dies_halfway(value, file, **kwargs):
    file.write('{"a": ')
    raise KeyboardInterrupt

  monkeypatch.setattr(experiment.json, "dump", dies_halfway)
  with pytest.raises(KeyboardInterrupt):
    experiment.write_json_atomically(str(path), {"a": 2})
  assert json.loads(path.read_text()) == {"a": 1}
