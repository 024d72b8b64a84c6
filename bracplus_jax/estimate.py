"""How long a run will take: the work it will do, in one line before it starts, and an estimate
from a short timing, the first compiled block of each phase (updates x the measured rate).

Each phase's updates cost differently (an RL update trains the policy, the critic ensemble and
alpha(s); a behaviour-model update one VAE), so until the RL phase has been timed the
estimate of the whole run is a lower bound, and says so.
"""

from __future__ import annotations

from typing import Callable, Optional

import ml_collections

from bracplus_jax import train

# The phases that take gradient steps, in order, with the names the progress bars show.
PHASES = {"behavior": "behaviour model", "policy_init": "initial policy",
          "critic_init": "initial critic", "epoch": "RL"}
# An estimate is printed where what is left takes at least this long; where it takes
# LONG_SECONDS or more, the line points to the quicker ways.
MIN_SECONDS = 60.0
LONG_SECONDS = 3600.0
CPU_HINT = ("hours here: --config=hopper_local trains in minutes on a CPU; the paper's settings "
            "(500 epochs, 3 x 512 networks) are meant for a GPU")
ACCELERATOR_HINT = "hours: --config=hopper_local (or fewer --config.epochs) gives a first result in minutes"


def long_run_hint() -> str:
  import jax
  return CPU_HINT if jax.default_backend() == "cpu" else ACCELERATOR_HINT


def phase_updates(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Gradient updates of each phase, per run (BC trains only its epochs)."""
  epochs = config.epochs * config.steps_per_epoch
  if config.method == "bc":
    return {"behavior": 0, "policy_init": 0, "critic_init": 0, "epoch": epochs}
  return {"behavior": config.behavior_steps, "policy_init": config.policy_init_steps,
          "critic_init": config.critic_init_steps, "epoch": epochs}


def duration(seconds: float) -> str:
  """'45 s', '12 min 5 s', '3 h 20 min'."""
  seconds = max(0, round(seconds))
  if seconds < 60:
    return f"{seconds} s"
  if seconds < 3600:
    return f"{seconds // 60} min {seconds % 60} s"
  return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def work_line(config: ml_collections.ConfigDict, num_runs: int) -> str:
  """What the run will do, in one line."""
  updates = phase_updates(config)
  total = sum(updates.values())
  points = num_runs // config.num_seeds
  if points > 1:
    runs = f"{num_runs} runs ({points} sweep points x {config.num_seeds} seeds, trained together)"
  elif num_runs > 1:
    runs = f"{num_runs} runs ({num_runs} seeds, trained together)"
  else:
    runs = f"1 run (seed {config.seed})"
  parts = [f"{PHASES[name]} {count:,}" for name, count in updates.items() if count and name != "epoch"]
  parts.append(f"RL {config.epochs} epochs x {config.steps_per_epoch:,}" if config.method != "bc"
               else f"BC {config.epochs} epochs x {config.steps_per_epoch:,}")
  evaluation = (f"; evaluation of {config.eval_episodes} episodes per run every {config.eval_every} epochs"
                if config.eval_episodes else "; no evaluation")
  return f"work: {runs}, {total:,} gradient updates each ({', '.join(parts)}){evaluation}"


def done_updates(config: ml_collections.ConfigDict, completed_units: int, blocks_done: int = 0) -> dict[str, int]:
  """Updates per phase a run resumed after `completed_units` units (and `blocks_done` blocks
  of the next one) has made already."""
  updates = phase_updates(config)
  block_steps = config.get("block_steps", train.BLOCK_STEPS)
  done = {name: 0 for name in PHASES}
  epochs_done = max(0, completed_units - len(train.STAGES))
  for stage in train.STAGES[:min(completed_units, len(train.STAGES))]:
    if stage in done:
      done[stage] = updates[stage]
  done["epoch"] = epochs_done * config.steps_per_epoch
  if blocks_done:
    name = train.STAGES[completed_units] if completed_units < len(train.STAGES) else "epoch"
    if name in done:
      unit_steps = config.steps_per_epoch if name == "epoch" else updates[name]
      done[name] += min(unit_steps, blocks_done * train.block_length(unit_steps, block_steps))
  return done


class Estimator:
  """Times the first compiled block of each phase and prints what is left at that rate.

  `on_block(phase, updates, seconds, compiled)` sees every block (the Trainer's hook);
  `finished` turns true once every phase left has been timed, after which the Trainer need
  not wait for blocks to end. `done` are the updates per phase already made (a resumed run)."""

  def __init__(self, config: ml_collections.ConfigDict, done: Optional[dict[str, int]] = None,
               write: Callable[[str], None] = print):
    self.updates = phase_updates(config)
    self.done = {name: 0 for name in PHASES} | dict(done or {})
    self.rates: dict[str, float] = {}
    self.write = write
    self.is_bc = config.method == "bc"

  def remaining(self, name: str) -> int:
    return max(0, self.updates[name] - self.done[name])

  @property
  def finished(self) -> bool:
    return all(name in self.rates or not self.remaining(name) for name in PHASES)

  def on_block(self, name: str, updates: int, seconds: float, compiled: bool) -> None:
    if name not in PHASES:
      return
    self.done[name] += updates
    if not compiled or name in self.rates or seconds <= 0:
      return  # a block that compiled first says nothing about the rate
    rate = self.rates[name] = updates / seconds
    line = self.line(name, rate)
    if line is not None:
      self.write(line)

  def line(self, name: str, rate: float) -> Optional[str]:
    """The estimate after timing phase `name` at `rate` updates/s; None when what is left is short."""
    phase = "BC" if self.is_bc and name == "epoch" else PHASES[name]
    this_phase = self.remaining(name) / rate
    order = list(PHASES)
    later = {other: self.remaining(other) for other in order[order.index(name) + 1:] if self.remaining(other)}
    # Later phases are timed later: until then, at this phase's rate, which makes a lower bound.
    total = this_phase + sum(count / self.rates.get(other, rate) for other, count in later.items())
    if total < MIN_SECONDS:
      return None
    text = (f"time: {phase} at {rate:,.0f} updates/s here: its {self.remaining(name):,} updates left "
            f"take about {duration(this_phase)}")
    if later:
      text += (f"; the {self.remaining(name) + sum(later.values()):,} updates left in the run at least "
               f"{duration(total)} (later phases cost more per update)")
    if total >= LONG_SECONDS:
      text += f"; {long_run_hint()}"
    return text
