"""Times the authors' released BRAC+ agent (TensorFlow, rlutils-python 0.0.3) at its gym defaults.

    <peer-venv>/bin/python benchmarks/peer/time_authors.py [--block=N] [--repeats=R]
        [--steps=update,behavior,policy_init] [--out=PATH]

Run it with the python of the venv that benchmarks/peer/make_env.sh makes; it
is the peer half of benchmarks/side_by_side.py. The agent is built the way
`BRACPRunner.main` builds it, with every default read from that function's
signature at run time, on synthetic hopper-sized data (obs 11, act 3, 100k
random transitions in the authors' own replay buffer; no environment, no
mujoco). Three steps are timed, each in the authors' own loop:

  behavior     the behaviour-VAE step: `agent.pretrain_behavior_policy(1, N, buffer)`
  policy_init  the initial-policy step: `agent.pretrain_cloning(1, N, buffer)`
  update       the RL step: N x `runner.run_one_step(t)`, i.e. `agent.update(buffer)`:
               sample a batch, one `_update` (behaviour VAE + critic + actor + alpha,
               beta, GP-weight steps + target update), store its metrics in the logger

in the pipeline's order. Each step is warmed up with one untimed block (tf.function
tracing), then R blocks of N steps are timed and reported as steps/s per block.
TensorFlow runs with its default thread pools. Prints one JSON object on stdout
(everything else the authors' code prints goes to stderr), or writes it to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter
os.environ.setdefault("TQDM_DISABLE", "1")  # the authors' loops draw progress bars on stderr
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "shims"))

import numpy as np  # noqa: E402

import peer_shims  # noqa: E402

OBSERVATION_DIM, ACTION_DIM, DATASET_SIZE = 11, 3, 100_000  # hopper, as benchmarks/throughput.py
STEPS = ("update", "behavior", "policy_init")
PIPELINE_ORDER = ("behavior", "policy_init", "update")
# The start-up thresholds the RL step runs with. The runner derives them from the
# data after pre-training (target entropy: behaviour NLL - act_dim ln std_scale;
# delta_behavior: pi/pi_b distance + generalization_threshold; delta_gp: that +
# the threshold again); these are the values benchmarks/throughput.py's
# initial_state gives ours. They only change numbers, not the work done.
TARGET_ENTROPY = -float(ACTION_DIM)
DELTA_BEHAVIOR = 1.0
DELTA_GP = 1.0


def synthetic_dataset(seed: int = 0) -> dict[str, np.ndarray]:
  """Hopper-sized random transitions under the replay buffer's keys (as in setup_replay_buffer)."""
  rng = np.random.default_rng(seed)
  return {
      "obs": rng.normal(size=(DATASET_SIZE, OBSERVATION_DIM)).astype(np.float32),
      "act": rng.uniform(-1.0, 1.0, size=(DATASET_SIZE, ACTION_DIM)).astype(np.float32),
      "next_obs": rng.normal(size=(DATASET_SIZE, OBSERVATION_DIM)).astype(np.float32),
      # setup_replay_buffer rescales rewards to [0, 1] (reward_scale=True)
      "rew": rng.uniform(size=DATASET_SIZE).astype(np.float32),
      "done": (rng.uniform(size=DATASET_SIZE) < 0.01).astype(np.float32),
  }


def runner_defaults(runner_cls) -> dict[str, Any]:
  """Every keyword default of `BRACPRunner.main`: the arguments a gym run gets."""
  return {name: parameter.default for name, parameter in inspect.signature(runner_cls.main).parameters.items()
          if parameter.default is not inspect.Parameter.empty}


def parameters_of(function) -> list[str]:
  return [name for name in inspect.signature(function).parameters if name != "self"]


class _VectorEnvSpaces:
  """What `BRACPRunner.setup_agent` reads from the (vector) env: its single spaces."""

  def __init__(self, gym):
    self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (OBSERVATION_DIM,), np.float32)
    self.single_action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def build(log_dir: str):
  """(runner, agent, replay buffer, record of the arguments), as BRACPRunner.main sets them up."""
  import gym
  import tensorflow as tf
  from rlutils.algos.tf.offline import bracp
  from rlutils.logx import EpochLogger
  from rlutils.replay_buffers import PyUniformReplayBuffer

  runner_cls = bracp.BRACPRunner
  defaults = runner_defaults(runner_cls)
  agent_defaults = {name: parameter.default for name, parameter in
                    inspect.signature(bracp.BRACPAgent.__init__).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}
  # The runner: seeds numpy, random and TF (and sets TF_DETERMINISTIC_OPS=1) as in a real run.
  runner = runner_cls(seed=defaults["seed"], steps_per_epoch=defaults["steps_per_epoch"],
                      epochs=defaults["epochs"], exp_name="side_by_side", logger_path=log_dir)
  runner.env = _VectorEnvSpaces(gym)  # setup_env without gym.make: only the spaces are read
  runner.logger = EpochLogger(output_dir=os.path.join(log_dir, "logs"))  # setup_logger without config.json

  agent_args = {name: defaults[name] for name in parameters_of(runner_cls.setup_agent)}
  runner.setup_agent(**agent_args)
  extra_args = {"pretrain_epochs": defaults["pretrain_epochs"], "save_freq": defaults["save_freq"],
                "max_kl": defaults["max_kl"], "force_pretrain_behavior": defaults["pretrain_behavior"],
                "force_pretrain_cloning": defaults["pretrain_cloning"],
                "generalization_threshold": defaults["generalization_threshold"],
                "std_scale": defaults["std_scale"]}
  runner.setup_extra(**extra_args)
  # setup_replay_buffer without d4rl: the same buffer class and call, on the synthetic data.
  runner.replay_buffer = PyUniformReplayBuffer.from_data_dict(data=synthetic_dataset(),
                                                              batch_size=defaults["batch_size"])
  agent = runner.agent
  # on_train_begin's first line; the RL update trains the behaviour VAE with this optimizer too.
  agent.set_behavior_policy_optimizer(runner.pretrain_epochs, runner.steps_per_epoch)
  record = {
      "built_as": "BRACPRunner(seed, steps_per_epoch, epochs).setup_agent(**agent_arguments) + "
                  "setup_extra(**extra_arguments) + PyUniformReplayBuffer.from_data_dict(data, batch_size)",
      "runner_main_defaults": {k: v for k, v in defaults.items() if k != "env_name"},
      "agent_arguments": {name: {"value": value, "from": "BRACPRunner.main default",
                                 "BRACPAgent.__init__ default": agent_defaults.get(name)}
                          for name, value in agent_args.items()},
      "extra_arguments": {name: {"value": value, "from": "BRACPRunner.main default"}
                          for name, value in extra_args.items()},
      "batch_size": {"value": defaults["batch_size"], "from": "BRACPRunner.main default"},
      "hard_coded_in_agent": {"kl_n (latent samples of the KL bound)": agent.kl_n,
                              "q ensemble heads (EnsembleMinQNet default)": agent.q_network.num_ensembles,
                              "behaviour VAE members": agent.behavior_policy.num_ensembles,
                              "behaviour VAE latent_dim (2 x act_dim)": agent.behavior_policy.latent_dim,
                              "max_q_backup": agent.max_q_backup},
      "set_before_timing": {
          "target_entropy": {"value": TARGET_ENTROPY, "instead_of": "behaviour NLL - act_dim ln(std_scale), "
                                                                      "computed in on_train_begin"},
          "delta_behavior": {"value": DELTA_BEHAVIOR, "instead_of": "pi/pi_b distance + generalization_threshold"},
          "delta_gp": {"value": DELTA_GP, "instead_of": "delta_behavior + generalization_threshold"},
      },
      "learning_rate_schedules": "as on_train_begin: set_behavior_policy_optimizer(pretrain_epochs, "
                                 "steps_per_epoch) at the start, set_pretrain_policy_net_optimizer(same) "
                                 "before the initial policy, set_policy_net_optimizer() before RL",
      "tf_determinism_env": os.environ.get("TF_DETERMINISTIC_OPS"),
      "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                     "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
  }
  return runner, agent, record


def time_step(runner, agent, step: str, block: int, repeats: int) -> dict[str, Any]:
  """One warm-up block (tracing) and `repeats` timed blocks of `block` steps of one step."""
  replay_buffer = runner.replay_buffer
  if step == "behavior":
    run_block = lambda: agent.pretrain_behavior_policy(1, block, replay_buffer)  # noqa: E731
  elif step == "policy_init":
    agent.target_entropy = TARGET_ENTROPY
    agent.set_pretrain_policy_net_optimizer(runner.pretrain_epochs, runner.steps_per_epoch)
    run_block = lambda: agent.pretrain_cloning(1, block, replay_buffer)  # noqa: E731
  else:
    agent.target_entropy = TARGET_ENTROPY
    agent.set_delta_behavior(DELTA_BEHAVIOR)
    agent.set_delta_gp(DELTA_GP)
    agent.set_policy_net_optimizer()

    def run_block():
      for t in range(block):
        runner.run_one_step(t)

  seconds = []
  for _ in range(repeats + 1):  # the first block traces the tf.functions and is not timed
    runner.logger.epoch_dict.clear()  # on_epoch_end's dump_tabular empties it once an epoch
    began = time.perf_counter()
    run_block()
    seconds.append(time.perf_counter() - began)
  warm_up, seconds = seconds[0], seconds[1:]
  steps_per_s = [block / s for s in seconds]
  ordered = sorted(steps_per_s)
  return {
      "step": step, "block": block, "repeats": repeats,
      "warm_up_block_s": warm_up,
      "block_seconds": seconds,
      "block_steps_per_s": steps_per_s,
      "steps_per_s": statistics.median(ordered),
      "steps_per_s_min": ordered[0],
      "steps_per_s_max": ordered[-1],
      "metrics_finite": metrics_finite(runner, agent, step),
  }


def metrics_finite(runner, agent, step: str):
  """Whether the last block's losses stayed finite (update: every metric the logger stored)."""
  if step != "update":
    return None
  values = [np.asarray(v, dtype=np.float64) for vs in runner.logger.epoch_dict.values() for v in vs]
  return bool(values) and all(np.all(np.isfinite(v)) for v in values)


def versions() -> dict[str, str]:
  # side_by_side.py imports only the standard library at its top, so this venv can read it.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from side_by_side import package_versions
  return package_versions(("rlutils-python", "tensorflow-cpu", "tensorflow-probability", "keras", "numpy", "gym"))


NOTES = [
    "RL update = agent.update(replay_buffer) as BRACPRunner.run_one_step calls it: host-side numpy "
    "sampling of the batch, one tf.function _update, and logger.store of its metrics (converted to "
    "numpy). Ours samples on the device inside a jitted scan of N steps.",
    "Their _update includes one behaviour-VAE step (train_on_batch), as ours does with "
    "behavior_steps_during_rl=True in the released preset.",
    "Work per RL update (theirs): actor takes n=5 policy samples per state (500 rows) and its KL bound "
    "kl_n=5 latents on each through all 3 VAEs (3 x 2,500 decoder rows); critic: 2 Q heads, max backup "
    "over n=5 target-policy samples; gradient penalty: 1 policy sample per state, KL with kl_n=5 "
    "latents x 3 VAEs, input-gradient of min-Q; Lagrange steps on alpha, beta and the GP weight; "
    "Polyak update of target critic and target policy. Ours (released preset) uses the same sample "
    "counts: kl_policy_samples=5, kl_latent_samples=5, kl_ensemble=all, td_max_samples=5, 1 policy "
    "sample for the gradient penalty and the initial policy.",
    "gp_type: BRACPRunner.main in rlutils-python 0.0.3 defaults to 'hard' (Heaviside weights); the "
    "BRACPAgent constructor and the authors' repository's later bracp.py default to 'softplus', as "
    "ours (gp_weighting=soft) does. The difference is a few elementwise ops on 100 values.",
    "Initial policy = update_actor_cloning: 1 policy sample per state, KL with kl_n=5 latents x 3 VAEs, "
    "plus the beta (entropy) step. Behaviour = train_on_batch of the 3-member VAE ensemble.",
    "Networks 2 x 256 hidden everywhere (policy_mlp_hidden, q_mlp_hidden, behavior_mlp_hidden = 256; "
    "build_mlp's num_layers=3).",
    "tqdm progress bars disabled (TQDM_DISABLE=1); otherwise the loops are the authors'.",
]


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--block", type=int, default=20, help="steps per timed block (default 20)")
  parser.add_argument("--repeats", type=int, default=5, help="timed blocks per step, after one warm-up block")
  parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {STEPS}")
  parser.add_argument("--out", default="", help="write the JSON here instead of stdout")
  args = parser.parse_args(argv)
  args.steps = [s for s in args.steps.split(",") if s]
  unknown = set(args.steps) - set(STEPS)
  if unknown:
    parser.error(f"unknown --steps {sorted(unknown)}; choose from {STEPS}")
  if args.block < 1 or args.repeats < 1:
    parser.error("--block and --repeats must be at least 1")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  began = time.perf_counter()
  warnings.filterwarnings("ignore", message=".*rng.randint.*")  # gym 0.25's note on rlutils' sampling
  with contextlib.redirect_stdout(sys.stderr):  # the authors' prints and TF's tracing messages
    shims = peer_shims.install()
    import tensorflow as tf
    with tempfile.TemporaryDirectory(prefix="bracp-peer-") as log_dir:
      runner, agent, record = build(log_dir)
      rows = [time_step(runner, agent, step, args.block, args.repeats)
              for step in PIPELINE_ORDER if step in args.steps]
  result = {
      "implementation": "authors' BRAC+ (rlutils-python 0.0.3, rlutils/algos/tf/offline/bracp.py), TensorFlow",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join([sys.executable, *sys.argv]),
      "python": platform.python_version(),
      "versions": versions() | {"tensorflow": tf.__version__},
      "machine": {"cpu_count": os.cpu_count(),
                  "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                  "platform": platform.platform(), "processor": platform.processor() or platform.machine()},
      "data": {"observation_dim": OBSERVATION_DIM, "action_dim": ACTION_DIM, "transitions": DATASET_SIZE,
               "kind": "synthetic: normal observations, uniform actions and rewards, 1% dones"},
      "agent": record,
      "shims": shims,
      "notes": NOTES,
      "rows": rows,
      "wall_s": time.perf_counter() - began,
  }
  text = json.dumps(result, indent=2, default=str)
  if args.out:
    with open(args.out, "w") as file:
      file.write(text + "\n")
  else:
    print(text)


if __name__ == "__main__":
  main()
