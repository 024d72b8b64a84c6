"""Before a run: its work in one line, then an estimate from each phase's first compiled block."""

import pytest
from conftest import episodes_dataset

from bracplus_jax import estimate
from bracplus_jax.configs import base, hopper_local


def test_the_work_line_names_every_phase_and_the_runs():
  config = base.get_config()
  config.num_seeds = 4
  line = estimate.work_line(config, 4)
  assert line.startswith("work: 4 runs (4 seeds, trained together), 1,600,000 gradient updates each")
  for part in ("behaviour model 400,000", "initial policy 100,000", "initial critic 100,000",
               "RL 500 epochs x 2,000", "10 episodes per run every 10 epochs"):
    assert part in line, line
  bc = hopper_local.get_config()
  bc.method, bc.eval_episodes = "bc", 0
  assert estimate.work_line(bc, 1) == (
      "work: 1 run (seed 0), 4,000 gradient updates each (BC 8 epochs x 500); no evaluation")


def test_a_phase_is_timed_on_its_first_block_that_did_not_compile():
  lines = []
  estimator = estimate.Estimator(base.get_config(), write=lines.append)
  estimator.on_block("behavior", 1000, 30.0, compiled=False)  # compiling: no rate
  assert not lines and estimator.done["behavior"] == 1000
  estimator.on_block("behavior", 1000, 0.5, compiled=True)
  estimator.on_block("behavior", 1000, 0.1, compiled=True)  # timed once
  line, = lines
  # 398,000 updates at 2,000/s; the run's 1,598,000 at that rate at least.
  assert line.startswith("time: behaviour model at 2,000 updates/s here: its 398,000 updates left take about 3 min 19 s")
  assert "the 1,598,000 updates left in the run at least 13 min 19 s" in line
  assert "hopper_local" not in line  # under an hour
  estimator.on_block("epoch", 2000, 20.0, compiled=True)
  assert lines[-1].startswith("time: RL at 100 updates/s here: its 998,000 updates left take about 2 h 46 min;")
  assert "hopper_local" in lines[-1]
  assert not estimator.finished  # the initial policy and critic are not timed yet
  estimator.on_block("policy_init", 1000, 1.0, compiled=True)
  estimator.on_block("critic_init", 1000, 1.0, compiled=True)
  assert estimator.finished


def test_a_short_run_gets_no_estimate():
  lines = []
  estimator = estimate.Estimator(hopper_local.get_config(), write=lines.append)
  estimator.on_block("behavior", 1000, 1.0, compiled=False)
  estimator.on_block("behavior", 1000, 0.5, compiled=True)
  assert lines == []  # 9,000 updates at 2,000/s


def test_a_resumed_run_counts_what_it_made_already():
  config = hopper_local.get_config()  # 4,000 / 1,500 / 1,500 start-up steps, 8 epochs of 500
  assert estimate.done_updates(config, 0) == {"behavior": 0, "policy_init": 0, "critic_init": 0, "epoch": 0}
  assert estimate.done_updates(config, 0, 2) == {"behavior": 2000, "policy_init": 0, "critic_init": 0, "epoch": 0}
  assert estimate.done_updates(config, 8) == {"behavior": 4000, "policy_init": 1500, "critic_init": 1500, "epoch": 1000}
  assert estimate.Estimator(config, estimate.done_updates(config, 8)).remaining("epoch") == 3000


def test_durations_read_naturally():
  assert [estimate.duration(s) for s in (0.4, 59, 61, 3599, 3600 * 5 + 125)] == [
      "0 s", "59 s", "1 min 1 s", "59 min 59 s", "5 h 2 min"]


@pytest.mark.slow
def test_the_trainer_reports_every_block_and_whether_it_had_compiled(d4rl_file):
  from bracplus_jax import data, train
  path = d4rl_file(**episodes_dataset([40, 40], ["terminal", "timeout"], obs_dim=3, act_dim=2))
  dataset = data.load_dataset(f"hdf5:{path}", progress=False)
  config = base.get_config()
  for name in ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims"):
    config.algo[name] = (8, 8)
  config.batch_size, config.block_steps = 8, 2
  trainer = train.Trainer(config, dataset, progress=False)
  seen = []
  trainer.on_block = lambda *block: seen.append(block)
  state, keys = trainer.initial()
  trainer.run_steps("behavior", state, keys, 6, "behaviour model")
  assert [(name, steps, compiled) for name, steps, _, compiled in seen] == [
      ("behavior", 2, False), ("behavior", 2, True), ("behavior", 2, True)]
  assert all(seconds > 0 for _, _, seconds, _ in seen)
