"""Our JAX BRAC+ and the authors' TensorFlow code timed side by side, alternating in one run.

    python benchmarks/side_by_side.py [--rounds=3] [--block=20] [--repeats=5]
        [--steps=update,behavior,policy_init] [--peer-python=PATH] [--out=PATH]
        [--ours-at=LABEL=REVISION[:MATMUL_DTYPE] ...] [--ours-with=LABEL=XLA_FLAGS ...]
        [--ours-dtype=LABEL=MATMUL_DTYPE ...]

Each round runs our timing, then theirs, as separate processes one after the
other (never at once), so both see the same machine at nearly the same time:
A B A B ... Ours is the released preset (batch 100, 1 seed, variant base) built
with benchmarks/throughput.py's functions: `scan_steps(step, block, 100)` jitted
with the state donated, one warm-up block, then `repeats` timed blocks. Theirs is
benchmarks/peer/time_authors.py under the peer venv's python (make it with
`bash benchmarks/peer/make_env.sh`): the authors' agent at its gym defaults,
their own loops, one warm-up block, then `repeats` timed blocks of the same
length. Both use the machine's cores at their defaults (XLA's, TF's thread pools).

The table gives steps/s, median [min-max] over every timed block of every round,
and ours/theirs: the median [min-max] over rounds of the ratio of the two sides'
medians within a round. `--ours-at before=<git revision>`, `--ours-with
<label>=<XLA_FLAGS>` and `--ours-dtype bf16=bfloat16` (our code with that
algo.matmul_dtype) time other versions of ours in the same rounds, between ours
and theirs, with their ratios to both: the before/after of an optimisation
(`--ours-at before_bf16=<revision>:bfloat16`: that revision with bfloat16 matmuls).
Every number comes from this run. JSON with every block
goes to --out (default benchmarks/results/side_by_side-<device>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
TIME_AUTHORS = os.path.join(BENCHMARKS, "peer", "time_authors.py")
MAKE_ENV = "benchmarks/peer/make_env.sh"
DEFAULT_PEER_VENV = os.environ.get("BRACPLUS_PEER_VENV") or os.path.join(
    os.path.expanduser("~"), ".cache", "bracplus_jax", "peer-venv")
STEPS = ("update", "behavior", "policy_init")
STEP_NAMES = {"update": "RL update", "behavior": "behaviour VAE", "policy_init": "initial policy"}
PRESET, BATCH_SIZE = "released", 100
WORKER_TIMEOUT_S = 3600
BUSY_WARNING = 0.05  # share of the CPUs other processes may use during a timing before the table warns


# ---------------------------------------------------------------------------
# Our side: a worker process that imports benchmarks/throughput.py
# ---------------------------------------------------------------------------


def time_ours(step: str, transitions, block: int, repeats: int, matmul_dtype: str = "") -> dict[str, Any]:
  """throughput.time_case for the released preset at batch 100, 1 seed: the same program and
  protocol as benchmarks/throughput.py, with every timed block's steps/s."""
  import throughput

  # Revisions older than algo.matmul_dtype run float32 and take no dtype.
  dtype = {"matmul_dtype": matmul_dtype} if matmul_dtype else {}
  case = throughput.Case(PRESET, BATCH_SIZE, 1, "base", step, **dtype)
  row = throughput.time_case(case, transitions, block, repeats, 256)
  row.setdefault("block_steps_per_s", [row["steps_per_s"]])  # versions that kept only the median
  return row | {"step": step, "case": case.name}


def ours_worker(args: argparse.Namespace) -> None:
  """Times our steps in this process and writes their JSON to args.out."""
  began = time.perf_counter()
  # The code timed: this checkout, or another revision's worktree (--code-dir).
  code_dir = os.path.abspath(args.code_dir or os.path.dirname(BENCHMARKS))
  sys.path[:0] = [os.path.join(code_dir, "benchmarks"), code_dir]
  import jax
  import throughput
  import bracplus_jax

  device = jax.devices()[0]
  transitions = throughput.synthetic_transitions()
  rows = [time_ours(step, transitions, args.block, args.repeats, args.matmul_dtype) for step in args.steps]
  matmul = throughput.matmul_throughput(1024 if device.platform == "cpu" else 4096)
  result = {
      "implementation": "ours (bracplus_jax), JAX",
      "code": os.path.dirname(os.path.abspath(bracplus_jax.__file__)),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "matmul_dtype": args.matmul_dtype or "float32",
      "command": " ".join([sys.executable, *sys.argv]),
      "versions": package_versions(("jax", "jaxlib", "flax", "optax", "numpy")),
      "device": throughput.device_description(device),
      "device_slug": throughput.device_slug(device),
      "preset": {"preset": PRESET, "batch_size": BATCH_SIZE, "num_seeds": 1, "variant": "base"},
      "data": {"observation_dim": throughput.OBSERVATION_DIM, "action_dim": throughput.ACTION_DIM,
               "transitions": throughput.DATASET_SIZE},
      "matmul_after_rows": matmul,
      "rows": rows,
      "wall_s": time.perf_counter() - began,
  }
  with open(args.out, "w") as file:
    json.dump(result, file, indent=2)


def package_versions(names) -> dict[str, Optional[str]]:
  import importlib.metadata as metadata
  found = {}
  for name in names:
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      found[name] = None
  return found


# ---------------------------------------------------------------------------
# The alternating driver
# ---------------------------------------------------------------------------


def busy_cpu_seconds() -> Optional[float]:
  """CPU time the whole machine has spent busy since boot (Linux /proc/stat), or None."""
  try:
    with open("/proc/stat") as file:
      fields = [int(v) for v in file.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def checkout(revision: str, directory: str) -> str:
  """A temporary git worktree of this repository at `revision`: another version of ours."""
  repository = os.path.dirname(BENCHMARKS)
  result = subprocess.run(["git", "-C", repository, "worktree", "add", "--detach", directory, revision],
                          capture_output=True, text=True)
  if result.returncode:
    sys.exit(f"--ours-at: cannot check out {revision!r}: {result.stderr.strip()}")
  return directory


def run_worker(side: str, command: list[str], out: str, log: str,
               environment: Optional[dict[str, str]] = None) -> dict[str, Any]:
  """Runs one side's timing process to completion; its JSON, or exit with its log's tail.

  Also measures how much of the machine other processes used meanwhile: the
  machine's busy CPU time less the worker's own, over the worker's wall time x cores.
  """
  load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
  busy, own = busy_cpu_seconds(), children_cpu_seconds()
  began = time.perf_counter()
  with open(log, "w") as log_file:
    try:
      completed = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, timeout=WORKER_TIMEOUT_S,
                                 env={**os.environ, **(environment or {})})
    except subprocess.TimeoutExpired:
      sys.exit(f"{side} timing ran past {WORKER_TIMEOUT_S} s and was stopped: {shlex.join(command)}")
  wall = time.perf_counter() - began
  busy_after, own_after = busy_cpu_seconds(), children_cpu_seconds()
  if completed.returncode != 0 or not os.path.exists(out):
    with open(log) as log_file:
      tail = log_file.read()[-4000:]
    sys.exit(f"{side} timing failed (exit {completed.returncode}): {shlex.join(command)}\n{tail}")
  with open(out) as file:
    result = json.load(file)
  result["process_wall_s"] = wall
  result["process_cpu_s"] = own_after - own
  result["load_average_before"] = load_average
  result["others_cpu_share"] = None if busy is None else max(
      0.0, (busy_after - busy) - (own_after - own)) / (wall * (os.cpu_count() or 1))
  return result


def worker_commands(args: argparse.Namespace, directory: str, round_index: int, code_dirs: dict[str, str]):
  """{side: (command, JSON path, extra environment)}, in the order a round runs them: our
  current code, each other version of ours (--ours-at, --ours-with), then theirs."""
  shared = [f"--block={args.block}", f"--repeats={args.repeats}", f"--steps={','.join(args.steps)}"]

  def ours(label, code_dir="", xla_flags=None, matmul_dtype=""):
    out = os.path.join(directory, f"{label}-{round_index}.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker=ours", *shared, f"--out={out}"]
    if code_dir:
      command.append(f"--code-dir={code_dir}")
    if matmul_dtype:
      command.append(f"--matmul-dtype={matmul_dtype}")
    return command, out, {} if xla_flags is None else {"XLA_FLAGS": xla_flags}

  commands = {"ours": ours("ours")}
  for label, code_dir in code_dirs.items():
    commands[label] = ours(label, code_dir=code_dir, matmul_dtype=dict(args.ours_at_dtype).get(label, ""))
  for label, flags in args.ours_with:
    commands[label] = ours(label, xla_flags=flags)
  for label, dtype in args.ours_dtype:
    commands[label] = ours(label, matmul_dtype=dtype)
  theirs_out = os.path.join(directory, f"theirs-{round_index}.json")
  commands["theirs"] = ([args.peer_python, TIME_AUTHORS, *shared, f"--out={theirs_out}"], theirs_out, {})
  return commands


def row_of(result: dict[str, Any], step: str) -> dict[str, Any]:
  return next(row for row in result["rows"] if row["step"] == step)


def spread(values: list[float]) -> dict[str, float]:
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(rounds: list[dict[str, Any]], steps: list[str]) -> dict[str, Any]:
  """Per step and side: steps/s over every block of every round; each side's ratio over
  theirs, and each other version of ours over our current code, per round and over rounds."""
  sides = list(rounds[0])
  summary = {}
  for step in steps:
    rows = {side: [row_of(r[side], step) for r in rounds] for side in sides}
    median = {side: [row["steps_per_s"] for row in rows[side]] for side in sides}
    entry = {f"{side}_steps_per_s": spread([v for row in rows[side] for v in row["block_steps_per_s"]])
             for side in sides}
    for side in sides:
      if side == "theirs":
        continue
      ratios = [a / b for a, b in zip(median[side], median["theirs"])]
      entry[f"ratio_{side}_over_theirs"] = spread(ratios) | {"per_round": ratios}
      if side != "ours":
        ratios = [a / b for a, b in zip(median[side], median["ours"])]
        entry[f"ratio_{side}_over_ours"] = spread(ratios) | {"per_round": ratios}
    summary[step] = entry
  return summary


def print_table(summary: dict[str, Any], sides: list[str], rounds: int, block: int, repeats: int) -> None:
  def cell(s, digits=2, suffix=""):
    return f"{s['median']:.{digits}f}{suffix} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"

  print(f"\nsteps/s, median [min-max] over {rounds} round(s) x {repeats} blocks of {block} steps; "
        f"ratios: median [min-max] over rounds of the rounds' median ratios")
  ours_sides = [side for side in sides if side != "theirs"]
  header = f"{'step':<16}" + "".join(f"{side:>26}" for side in sides) + "".join(
      f"{side + '/theirs':>24}" for side in ours_sides) + "".join(
      f"{side + '/ours':>24}" for side in ours_sides if side != "ours")
  print(header)
  print("-" * len(header))
  for step, entry in summary.items():
    line = f"{STEP_NAMES[step]:<16}" + "".join(f"{cell(entry[f'{side}_steps_per_s']):>26}" for side in sides)
    line += "".join(f"{cell(entry[f'ratio_{side}_over_theirs'], suffix='x'):>24}" for side in ours_sides)
    line += "".join(f"{cell(entry[f'ratio_{side}_over_ours'], suffix='x'):>24}"
                    for side in ours_sides if side != "ours")
    print(line)


def machine_description() -> dict[str, Any]:
  return {
      "cpu_count": os.cpu_count(),
      "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "python": platform.python_version(),
      "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
      "environment": {name: os.environ[name] for name in sorted(os.environ) if name.startswith(
          ("XLA_", "TF_", "OMP_", "MKL_", "OPENBLAS_", "JAX_", "CUDA_VISIBLE"))},
  }


def driver(args: argparse.Namespace) -> None:
  if not os.path.exists(args.peer_python):
    sys.exit(f"The authors' code's venv is missing ({args.peer_python} not found): "
             f"run `bash {MAKE_ENV}` first, or pass --peer-python.")
  began = time.perf_counter()
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  machine = machine_description()
  print(f"{args.rounds} round(s), ours then theirs in each; {args.repeats} timed blocks of {args.block} "
        f"steps per step, after one warm-up block; steps: {', '.join(args.steps)}", flush=True)

  rounds = []
  with tempfile.TemporaryDirectory(prefix="side-by-side-") as directory:
    code_dirs = {label: checkout(revision, os.path.join(directory, f"code-{label}"))
                 for label, revision in args.ours_at}
    for index in range(args.rounds):
      results = {}
      for side, (command, out, environment) in worker_commands(args, directory, index, code_dirs).items():
        results[side] = run_worker(side, command, out, os.path.join(directory, f"{side}-{index}.log"),
                                   environment)
        rates = ", ".join(f"{STEP_NAMES[row['step']]} {row['steps_per_s']:.2f}" for row in results[side]["rows"])
        others = results[side]["others_cpu_share"]
        print(f"  round {index + 1}/{args.rounds} {side:<6}: {rates} steps/s "
              f"({results[side]['process_wall_s']:.0f} s"
              + ("" if others is None else f", other processes used {100 * others:.0f}% of the CPUs") + ")",
              flush=True)
      rounds.append(results)
  if code_dirs:  # the worktrees went with the temporary directory
    subprocess.run(["git", "-C", os.path.dirname(BENCHMARKS), "worktree", "prune"], capture_output=True)

  summary = summarise(rounds, args.steps)
  sides = list(rounds[0])
  print_table(summary, sides, args.rounds, args.block, args.repeats)
  busiest = max((r[side]["others_cpu_share"] or 0.0) for r in rounds for side in sides)
  if busiest > BUSY_WARNING:
    print(f"\nwarning: other processes used up to {100 * busiest:.0f}% of the CPUs during a timing; "
          "the numbers (and a ratio of rounds timed under different load) are unreliable")
  first_ours, first_theirs = rounds[0]["ours"], rounds[0]["theirs"]
  out = args.out or os.path.join(BENCHMARKS, "results", f"side_by_side-{first_ours['device_slug']}.json")
  result = {
      "date": date,
      "command": shlex.join([sys.executable, *sys.argv]),
      "wall_s": time.perf_counter() - began,
      "protocol": {"rounds": args.rounds, "block": args.block, "repeats": args.repeats, "steps": args.steps,
                   "order": "each round: ours, each other version of ours, then theirs, as separate "
                            "processes, sequentially",
                   "versions_of_ours": {"at_revision": dict(args.ours_at), "with_xla_flags": dict(args.ours_with),
                                        "with_matmul_dtype": dict(args.ours_dtype) | dict(args.ours_at_dtype)},
                   "warm_up": "one untimed block per step and process (XLA compile / tf.function tracing)",
                   "ratio": "ours/theirs of the two sides' median steps/s within each round",
                   "others_cpu_share": "per process: the machine's busy CPU time less the worker's own, "
                                       "over its wall time x cores (other work on the machine)"},
      "machine": machine,
      "versions": {"ours": first_ours["versions"], "theirs": first_theirs["versions"]},
      "ours_device": first_ours["device"],
      "ours_preset": first_ours["preset"],
      "theirs_agent": first_theirs["agent"],
      "theirs_shims": first_theirs["shims"],
      "notes": first_theirs["notes"],
      "summary": summary,
      "rounds": rounds,
  }
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as file:
    json.dump(result, file, indent=2, default=str)
  print(f"\nwrote {out} ({result['wall_s']:.0f} s)")


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=3, help="ours-then-theirs rounds (default 3)")
  parser.add_argument("--block", type=int, default=20, help="steps per timed block, both sides (default 20)")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed blocks per step and round, after one warm-up block (default 5)")
  parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {STEPS}")
  parser.add_argument("--peer-python", default=os.path.join(DEFAULT_PEER_VENV, "bin", "python"),
                      help="python of the venv made by benchmarks/peer/make_env.sh "
                           "(default $BRACPLUS_PEER_VENV or ~/.cache/bracplus_jax/peer-venv, bin/python)")
  parser.add_argument("--out", default="",
                      help="JSON path (default benchmarks/results/side_by_side-<device>.json; "
                           "with --worker, where the worker writes its JSON)")
  parser.add_argument("--ours-at", action="append", default=[], metavar="LABEL=REVISION[:MATMUL_DTYPE]",
                      help="also time our code at this git revision (a temporary worktree), e.g. "
                           "before=HEAD~3 (or before_bf16=HEAD~3:bfloat16, with that algo.matmul_dtype): "
                           "the before/after of a change; repeatable")
  parser.add_argument("--ours-with", action="append", default=[], metavar="LABEL=XLA_FLAGS",
                      help="also time our current code with these XLA_FLAGS; repeatable")
  parser.add_argument("--ours-dtype", action="append", default=[], metavar="LABEL=MATMUL_DTYPE",
                      help="also time our current code with this algo.matmul_dtype, e.g. bf16=bfloat16; "
                           "repeatable")
  parser.add_argument("--worker", choices=("ours",), default=None,
                      help="internal: time our side in this process (the driver starts these)")
  parser.add_argument("--code-dir", default="", help="internal: the checkout the worker times")
  parser.add_argument("--matmul-dtype", default="", help="internal: the worker's algo.matmul_dtype")
  args = parser.parse_args(argv)
  args.steps = [s for s in args.steps.split(",") if s]
  unknown = set(args.steps) - set(STEPS)
  if unknown or not args.steps:
    parser.error(f"--steps must be a subset of {STEPS}")
  if args.rounds < 1 or args.block < 1 or args.repeats < 1:
    parser.error("--rounds, --block and --repeats must be at least 1")
  if args.worker and not args.out:
    parser.error("--worker needs --out")
  for name in ("ours_at", "ours_with", "ours_dtype"):
    pairs = []
    for spec in getattr(args, name):
      label, equals, value = spec.partition("=")
      if not equals or not label or label in ("ours", "theirs") or not label.isidentifier():
        parser.error(f"--{name.replace('_', '-')} {spec!r}: expected LABEL=VALUE with a new label "
                     "(letters, digits, _)")
      pairs.append((label, value))
    setattr(args, name, pairs)
  for label, dtype in args.ours_dtype:
    if dtype not in ("float32", "bfloat16"):
      parser.error(f"--ours-dtype {label}={dtype}: expected float32 or bfloat16")
  args.ours_at_dtype = []  # (label, matmul dtype) of the --ours-at versions that name one
  for index, (label, value) in enumerate(args.ours_at):
    revision, colon, dtype = value.rpartition(":")
    if colon:
      if dtype not in ("float32", "bfloat16"):
        parser.error(f"--ours-at {label}={value}: expected REVISION or REVISION:float32|bfloat16")
      args.ours_at[index] = (label, revision)
      args.ours_at_dtype.append((label, dtype))
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker == "ours":
    ours_worker(args)
  else:
    driver(args)


if __name__ == "__main__":
  main()
