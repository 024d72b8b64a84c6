"""Throughput of BRAC+'s compiled steps on this machine's first device.

    python benchmarks/throughput.py [--quick] [--block=N] [--repeats=N] [--out=PATH]

Each row times `scan_steps(step, block, batch)` jitted with the state donated
and vmapped over seeds, exactly as `train.py` runs it, on synthetic
hopper-sized data (obs 11, act 3, 100k transitions on the device). It reports
steps/s (median, min and max over the timed blocks after one warm-up block),
the compile time, XLA's FLOP count per step and the model FLOP utilisation:
FLOPs per step x steps/s over this device's matmul throughput (float32, or
bfloat16 operands with float32 sums for --matmul-dtypes=bfloat16), measured in
the same run. The grid varies one factor at a time from each preset's anchor
(the paper config at batch 256, the released code's preset at its batch 100,
both 1 seed): seeds, gradient penalty off, MMD instead of the KL bound,
alpha(s)'s dual step by line search instead of the tangent-kernel solve, batch.
The released preset's start-up phases are timed too. A table goes to stdout,
every row to JSON (default benchmarks/results/<device>.json). The authors'
TensorFlow code is timed beside ours by benchmarks/side_by_side.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bracplus_jax import config as config_lib  # noqa: E402
from bracplus_jax import learner, losses, networks  # noqa: E402
from bracplus_jax.data.transitions import Transitions  # noqa: E402
from bracplus_jax.configs.base import get_config, use_released_code_choices  # noqa: E402

OBSERVATION_DIM, ACTION_DIM, DATASET_SIZE = 11, 3, 100_000  # hopper
PRESETS = ("paper", "released")
VARIANTS = ("base", "gp_off", "mmd", "alpha_line_search", "alpha_leverage", "alpha_plain")
SEED_COUNTS = (1, 2, 4, 8, 16)
BATCH_SIZES = (100, 256, 1024)

PHASE_NAMES = {"behavior": "behaviour VAE", "policy_init": "initial policy", "update": "RL update"}


@dataclasses.dataclass(frozen=True)
class Case:
  """One timed program: a step of one preset, possibly varied, at one batch and seed count."""

  preset: str  # paper | released
  batch_size: int
  num_seeds: int = 1
  variant: str = "base"  # one of VARIANTS
  step: str = "update"  # update | behavior | policy_init
  matmul_dtype: str = "float32"  # algo.matmul_dtype

  @property
  def name(self) -> str:
    name = self.preset if self.variant == "base" else f"{self.preset} {self.variant}"
    if self.matmul_dtype != "float32":
      name = f"{name} {self.matmul_dtype}"
    return name if self.step == "update" else f"{name} {PHASE_NAMES[self.step]}"


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------


def anchor_batch(preset: str) -> int:
  return make_config(preset).batch_size


def full_grid(presets, seed_counts, variants, batch_sizes, phases: bool) -> list[Case]:
  """Per preset: the anchor over seed counts, then each variant and each other batch at 1 seed."""
  cases = []
  for preset in presets:
    batch = anchor_batch(preset)
    cases += [Case(preset, batch, seeds) for seeds in seed_counts]
    cases += [Case(preset, batch, 1, variant) for variant in variants if variant != "base"]
    cases += [Case(preset, other, 1) for other in batch_sizes if other != batch]
  if phases and "released" in presets:
    cases += [Case("released", anchor_batch("released"), 1, step=step) for step in ("behavior", "policy_init")]
  return list(dict.fromkeys(cases))


def quick_grid() -> list[Case]:
  """A few minutes on a 2-core CPU: each preset's anchor, 4 seeds of the cheaper one, the phases."""
  return [Case("paper", 256), Case("released", 100), Case("released", 100, 4),
          Case("released", 100, step="behavior"), Case("released", 100, step="policy_init")]


def make_config(preset: str, variant: str = "base", batch_size: Optional[int] = None,
                matmul_dtype: str = "float32"):
  config = get_config()
  config.algo.matmul_dtype = matmul_dtype
  if preset == "released":
    use_released_code_choices(config)
  if variant == "gp_off":
    config.algo.gp_weighting = "off"
  elif variant == "mmd":
    config.algo.divergence = "mmd"
  elif variant == "alpha_line_search":  # alpha(s)'s dual step without the tangent-kernel solve
    config.algo.alpha_dual_fit = "line_search"
  elif variant == "alpha_leverage":  # the leverage gain instead of the row offsets
    config.algo.alpha_dual_gain = "leverage"
  elif variant == "alpha_plain":  # the network's plain step alone (gain 1, no row offsets)
    config.algo.alpha_dual_gain = "constant"
  if batch_size is not None:
    config.batch_size = batch_size
  config_lib.validate(config)
  return config


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def synthetic_transitions(seed: int = 0) -> Transitions:
  """Hopper-sized random transitions on the device; throughput does not depend on the values."""
  rng = np.random.default_rng(seed)
  arrays = dict(
      observations=rng.normal(size=(DATASET_SIZE, OBSERVATION_DIM)),
      actions=rng.uniform(-1.0, 1.0, size=(DATASET_SIZE, ACTION_DIM)),
      rewards=rng.uniform(size=DATASET_SIZE),
      next_observations=rng.normal(size=(DATASET_SIZE, OBSERVATION_DIM)),
      dones=(rng.uniform(size=DATASET_SIZE) < 0.01),
  )
  return Transitions(**{name: jax.device_put(value.astype(np.float32)) for name, value in arrays.items()})


def initial_state(algorithm: learner.BRACPlus, num_seeds: int, step: str):
  """Freshly initialised state for every seed, switched to RL for the update.

  The thresholds start finite (init leaves them at +-inf until the start-up
  phases set them), so the soft penalty weights and the entropy dual stay finite.
  """
  keys = jax.random.split(jax.random.key(0), num_seeds)
  state = jax.jit(jax.vmap(algorithm.init))(keys)
  if step == "update":
    state = jax.jit(jax.vmap(algorithm.start_rl))(state)
  # Separate buffers: a donated state must not hold one buffer twice.
  return state.replace(kl_threshold=jnp.full(num_seeds, 1.0), gp_threshold=jnp.full(num_seeds, 1.0),
                       target_entropy=jnp.full(num_seeds, -float(ACTION_DIM)))


# ---------------------------------------------------------------------------
# XLA's cost model and this device's matmul throughput
# ---------------------------------------------------------------------------


def cost_of(compiled_or_lowered) -> dict[str, float]:
  """XLA's cost analysis as one dict (some jax versions return a list with one per program)."""
  analysis = compiled_or_lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return dict(analysis or {})


@functools.cache
def cost_counts_every_iteration() -> bool:
  """Whether XLA's FLOP count of a scan multiplies its body by the trip count.

  XLA's HLO cost analysis counts a while loop's body once, whatever its trip
  count; this probe checks that on the running version so that FLOPs per step
  stay right if it ever counts every iteration.
  """
  matrix = jnp.ones((32, 32))

  def chain(length):
    def run(x):
      return jax.lax.scan(lambda carry, _: (carry @ matrix, None), x, None, length=length)[0]
    return cost_of(jax.jit(run).lower(matrix).compile()).get("flops", 0.0)

  return chain(4) > 1.5 * chain(2)


def matmul_throughput(size: int, chain: int = 8, repeats: int = 7, dtype: str = "float32") -> dict[str, Any]:
  """FLOP/s of a jitted chain of size x size matmuls at default precision: median of repeats.
  dtype "bfloat16": the products the networks take with that matmul_dtype (bfloat16 operands,
  float32 sums)."""
  keys = jax.random.split(jax.random.key(1))
  x = jax.random.normal(keys[0], (size, size), jnp.float32)
  w = jax.random.normal(keys[1], (size, size), jnp.float32) / np.sqrt(size)  # keeps |x| steady
  product = (lambda y: y @ w) if dtype == "float32" else (lambda y: networks.bfloat16_matmul(y, w))

  @jax.jit
  def run(x):
    return jax.lax.fori_loop(0, chain, lambda _, y: product(y), x)

  jax.block_until_ready(run(x))
  seconds = []
  for _ in range(repeats):
    began = time.perf_counter()
    jax.block_until_ready(run(x))
    seconds.append(time.perf_counter() - began)
  flops = 2.0 * size**3 * chain
  return {"size": size, "dtype": dtype, "chain": chain, "repeats": repeats, "median_s": statistics.median(seconds),
          "flops_per_s": flops / statistics.median(seconds), "max_flops_per_s": flops / min(seconds)}


# ---------------------------------------------------------------------------
# Timing one case
# ---------------------------------------------------------------------------


def step_function(algorithm: learner.BRACPlus, step: str):
  return {"update": algorithm.update, "behavior": algorithm.behavior_step,
          "policy_init": algorithm.policy_init_step}[step]


def time_case(case: Case, transitions: Transitions, block: int, repeats: int,
              matmul_size: int) -> dict[str, Any]:
  """Compiles and times one case; its matmul throughput is measured right after its
  blocks, so the utilisation compares like with like on a machine whose load varies."""
  config = make_config(case.preset, case.variant, case.batch_size, case.matmul_dtype)
  algorithm = learner.BRACPlus(config.algo, OBSERVATION_DIM, ACTION_DIM, dataset_size=transitions.size)
  state = initial_state(algorithm, case.num_seeds, case.step)
  scanned = learner.over_seeds(learner.scan_steps(step_function(algorithm, case.step), block, case.batch_size))
  block_keys = jax.random.split(jax.random.key(2), (repeats + 1, case.num_seeds))

  began = time.perf_counter()
  lowered = jax.jit(scanned, donate_argnums=0).lower(state, transitions, block_keys[0])
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()

  seconds = []
  for keys in block_keys:  # the first block warms up and is not timed
    block_began = time.perf_counter()
    state, metrics = compiled(state, transitions, keys)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - block_began)
  warm_up, seconds = seconds[0], seconds[1:]
  matmul_flops_per_s = matmul_throughput(matmul_size, dtype=case.matmul_dtype)["flops_per_s"]

  steps_per_s = sorted(block / s for s in seconds)
  median = statistics.median(steps_per_s)
  cost = cost_of(compiled)
  counted = block if cost_counts_every_iteration() else 1
  flops_per_step = cost["flops"] / counted if "flops" in cost else None
  bytes_per_step = cost["bytes accessed"] / counted if "bytes accessed" in cost else None
  return dataclasses.asdict(case) | {
      "name": case.name,
      "block": block,
      "repeats": repeats,
      "trace_s": lowered_at - began,
      "compile_s": compiled_at - began,  # tracing, lowering and XLA's compile
      "warm_up_block_s": warm_up,
      "block_seconds": seconds,
      "block_steps_per_s": [block / s for s in seconds],  # in the order timed
      "steps_per_s": median,
      "steps_per_s_min": steps_per_s[0],
      "steps_per_s_max": steps_per_s[-1],
      "seed_steps_per_s": median * case.num_seeds,
      "flops_per_step": flops_per_step,  # all seeds of one vmapped step
      "bytes_accessed_per_step": bytes_per_step,
      "achieved_flops_per_s": flops_per_step * median if flops_per_step else None,
      "matmul_flops_per_s": matmul_flops_per_s,
      "model_flop_utilisation": flops_per_step * median / matmul_flops_per_s if flops_per_step else None,
      "metrics_finite": bool(all(np.all(np.isfinite(np.asarray(m))) for m in jax.tree.leaves(metrics))),
  }


# ---------------------------------------------------------------------------
# Where the FLOPs of one update go
# ---------------------------------------------------------------------------


def flop_breakdown(preset: str) -> dict[str, float]:
  """FLOPs of one update (1 seed, the preset's batch) and of its parts, from XLA's cost
  analysis of the lowered (unoptimised) programs: no compile needed, and within a
  fraction of a percent of the compiled count for the whole update."""
  config = make_config(preset)
  algo, batch_size = config.algo, config.batch_size
  algorithm = learner.BRACPlus(algo, OBSERVATION_DIM, ACTION_DIM, dataset_size=DATASET_SIZE)
  key = jax.random.key(3)
  state = jax.tree.map(lambda x: x[0], initial_state(algorithm, 1, "update"))
  batch = synthetic_transitions().sample(key, batch_size)
  n = algorithm.num_policy_samples
  pre_tanh = jnp.zeros((n, batch_size, ACTION_DIM))
  mean = std = jnp.ones((batch_size, ACTION_DIM))

  def flops(function, *args):
    return cost_of(jax.jit(function).lower(*args)).get("flops", float("nan"))

  def divergence_with_vjp(mean, std, pre_tanh):
    divergence, pullback = jax.vjp(
        lambda m, s, u: algorithm.divergence(state.behavior.params, batch.observations, m, s, u, key),
        mean, std, pre_tanh)
    return pullback(jnp.ones_like(divergence))

  def policy_with_vjp(params):
    outputs, pullback = jax.vjp(lambda p: algorithm.policy.apply(p, batch.observations), params)
    return pullback(jax.tree.map(jnp.ones_like, outputs))

  def critic_gradient(params, with_penalty):
    # As the update takes it: one policy action per state, every head's gradient in one pass.
    penalty = dict(policy_actions=jnp.tanh(pre_tanh[:1]), penalty_weights=jnp.ones(batch_size),
                   penalty_scale=0.1, per_head_actions=True) if with_penalty else {}
    return jax.grad(losses.critic_loss, has_aux=True)(
        params, algorithm.critic.apply, batch, batch.rewards, **penalty)[0]

  parts = {
      "update": flops(algorithm.update, state, batch, key),
      "divergence, forward and vjp (behaviour encoder + decoders)": flops(divergence_with_vjp, mean, std, pre_tanh),
      "policy network, forward and vjp": flops(policy_with_vjp, state.policy.params),
      "critic loss gradient, TD part": flops(lambda p: critic_gradient(p, False), state.critic.params),
  }
  if algo.gp_weighting != "off":
    with_penalty = flops(lambda p: critic_gradient(p, True), state.critic.params)
    parts["critic loss gradient, gradient penalty part"] = with_penalty - parts["critic loss gradient, TD part"]
  if algo.behavior_steps_during_rl:
    parts["behaviour VAE step"] = flops(algorithm.behavior_step, state, batch, key)
  parts["everything else (TD targets, actor's Q, alpha, optimisers)"] = parts["update"] - sum(
      value for name, value in parts.items() if name != "update")
  return parts


# ---------------------------------------------------------------------------
# Device, output
# ---------------------------------------------------------------------------


def cpu_cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def device_slug(device) -> str:
  """cpu-2core on a CPU; the device kind otherwise, e.g. nvidia-h100-80gb-hbm3."""
  if device.platform == "cpu":
    return f"cpu-{cpu_cores()}core"
  return re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-")


def device_description(device) -> dict[str, Any]:
  return {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count(),
          "host_cores": cpu_cores(), "host_processor": platform.processor() or platform.machine(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _number(value, digits=1):
  return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
  header = (f"{'case':<28} {'batch':>5} {'seeds':>5} {'block':>5} {'compile s':>9} "
            f"{'steps/s [min-max]':>24} {'seed-steps/s':>12} {'GFLOP/step':>10} {'GFLOP/s':>8} "
            f"{'matmul':>7} {'MFU %':>6}")
  print(header)
  print("-" * len(header))
  for row in rows:
    spread = f"{row['steps_per_s']:.2f} [{row['steps_per_s_min']:.2f}-{row['steps_per_s_max']:.2f}]"
    gflop = row["flops_per_step"] / 1e9 if row["flops_per_step"] else None
    achieved = row["achieved_flops_per_s"] / 1e9 if row["achieved_flops_per_s"] else None
    utilisation = 100 * row["model_flop_utilisation"] if row["model_flop_utilisation"] else None
    print(f"{row['name']:<28} {row['batch_size']:>5} {row['num_seeds']:>5} {row['block']:>5} "
          f"{row['compile_s']:>9.1f} {spread:>24} {row['seed_steps_per_s']:>12.2f} "
          f"{_number(gflop, 3):>10} {_number(achieved):>8} {row['matmul_flops_per_s'] / 1e9:>7.1f} "
          f"{_number(utilisation):>6}")


def print_breakdown(breakdowns: dict[str, dict[str, float]]) -> None:
  for preset, parts in breakdowns.items():
    total = parts["update"]
    print(f"\nFLOPs of one {preset} update (1 seed, batch {anchor_batch(preset)}): {total / 1e9:.3f} GFLOP")
    for name, value in parts.items():
      if name != "update":
        print(f"  {100 * value / total:5.1f}%  {value / 1e9:7.3f} GFLOP  {name}")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="paper 1 seed batch 256, released batch 100 at 1 and 4 seeds, the phases")
  parser.add_argument("--block", type=int, default=0,
                      help="steps per timed block (0: 1000 on accelerators, 20 on CPU; --quick 200 / 10)")
  parser.add_argument("--repeats", type=int, default=5, help="timed blocks per case, after one warm-up")
  parser.add_argument("--out", default="", help="JSON path (default benchmarks/results/<device>.json)")
  parser.add_argument("--presets", default=",".join(PRESETS))
  parser.add_argument("--seeds", default=",".join(map(str, SEED_COUNTS)))
  parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {VARIANTS}")
  parser.add_argument("--batches", default=",".join(map(str, BATCH_SIZES)))
  parser.add_argument("--matmul-dtypes", default="float32",
                      help=f"comma-separated algo.matmul_dtype values, every case in each (of {networks.MATMUL_DTYPES})")
  parser.add_argument("--no-phases", dest="phases", action="store_false",
                      help="skip the released preset's start-up phases")
  parser.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                      help="skip the FLOP breakdown of one update")
  args = parser.parse_args(argv)
  if args.repeats < 1:
    parser.error("--repeats must be at least 1")
  args.matmul_dtypes = args.matmul_dtypes.split(",")
  if not set(args.matmul_dtypes) <= set(networks.MATMUL_DTYPES):
    parser.error(f"--matmul-dtypes must be a subset of {networks.MATMUL_DTYPES}")
  return args


def default_block(device, quick: bool) -> int:
  if device.platform == "cpu":
    return 10 if quick else 20
  return 200 if quick else 1000


def main(argv=None) -> None:
  args = parse_args(argv)
  device = jax.devices()[0]
  block = args.block or default_block(device, args.quick)
  if args.quick:
    grid = quick_grid()
  else:
    grid = full_grid(args.presets.split(","), [int(s) for s in args.seeds.split(",")],
                     args.variants.split(","), [int(b) for b in args.batches.split(",")], args.phases)
  cases = [dataclasses.replace(case, matmul_dtype=dtype) for dtype in args.matmul_dtypes for case in grid]
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                 f"{device_slug(device)}.json")

  print(f"jax {jax.__version__} on {device.device_kind} ({device.platform}, {cpu_cores()} host cores); "
        f"{len(cases)} cases, {block} steps per block, {args.repeats} timed blocks each")
  matmul_size = 1024 if device.platform == "cpu" else 4096
  matmul = matmul_throughput(matmul_size)
  print(f"f32 matmul {matmul['size']}x{matmul['size']}: {matmul['flops_per_s'] / 1e9:.1f} GFLOP/s (median)\n")

  transitions = synthetic_transitions()
  rows = []
  for case in cases:
    rows.append(time_case(case, transitions, block, args.repeats, matmul_size))
    print(f"  {case.name}, batch {case.batch_size}, {case.num_seeds} seeds: "
          f"{rows[-1]['steps_per_s']:.2f} steps/s, compile {rows[-1]['compile_s']:.1f} s", flush=True)
  print()
  print_table(rows)
  breakdowns = {}
  if args.breakdown:
    breakdowns = {preset: flop_breakdown(preset) for preset in dict.fromkeys(c.preset for c in cases)}
    print_breakdown(breakdowns)

  result = {
      "jax_version": jax.__version__,
      "device": device_description(device),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join(["benchmarks/throughput.py"] + sys.argv[1:]),
      "data": {"observation_dim": OBSERVATION_DIM, "action_dim": ACTION_DIM, "transitions": DATASET_SIZE},
      "matmul": matmul,
      "flops_note": "XLA's cost analysis of the compiled block, per step: " + (
          "the block's count / block" if cost_counts_every_iteration()
          else "the scan's body is counted once, so the block's count is one step's"),
      "rows": rows,
      "flop_breakdown": breakdowns,
  }
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as file:
    json.dump(result, file, indent=2)
  print(f"\nwrote {out}")


if __name__ == "__main__":
  main()
