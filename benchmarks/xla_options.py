"""XLA CPU options against the default, for the released preset's three steps.

  python benchmarks/xla_options.py [--rounds=3] [--block=10] [--repeats=5]

Each option is one set of XLA_FLAGS. Every round times every option once, in
its own process (XLA reads its flags at start-up), in turn, so that a machine
whose load drifts affects all of them alike; each process times the update,
the behaviour-VAE step and the initial-policy step as `benchmarks/throughput.py`
does (released preset, batch 100, one seed, hopper sizes). Prints medians over
rounds and the ratio to the default, and writes benchmarks/results/xla_options.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS = {
    "default": "",
    "legacy runtime (no thunks)": "--xla_cpu_use_thunk_runtime=false",
    "single-threaded Eigen": "--xla_cpu_multi_thread_eigen=false",
    "YNNPACK dots": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "YNNPACK dots and elementwise": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise",
    "oneDNN": "--xla_cpu_use_onednn=true",
}
STEPS = ("update", "behavior", "policy_init")

WORKER = """
import json, sys
sys.path.insert(0, {here!r})
import throughput as t
transitions = t.synthetic_transitions()
rows = {{}}
for step in {steps!r}:
  case = t.Case("released", 100, 1, "base", step)
  row = t.time_case(case, transitions, {block}, {repeats}, 256)
  rows[step] = {{"steps_per_s": row["steps_per_s"], "min": row["steps_per_s_min"],
                 "max": row["steps_per_s_max"], "compile_s": row["compile_s"]}}
print("RESULT " + json.dumps(rows))
"""


def measure(flags: str, block: int, repeats: int) -> dict:
  code = WORKER.format(here=HERE, steps=STEPS, block=block, repeats=repeats)
  env = {**os.environ, "XLA_FLAGS": flags}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
  lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
  if result.returncode or not lines:
    raise RuntimeError(f"XLA_FLAGS={flags!r} failed: {result.stderr[-2000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--block", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--options", default=",".join(OPTIONS), help="a comma-separated subset")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "xla_options.json"))
  args = parser.parse_args(argv)
  chosen = [name for name in args.options.split(",") if name]
  unknown = [name for name in chosen if name not in OPTIONS]
  if unknown:
    parser.error(f"--options: unknown {unknown}; expected any of {list(OPTIONS)}")
  began = time.time()
  rounds = []
  for index in range(args.rounds):
    rounds.append({name: measure(OPTIONS[name], args.block, args.repeats) for name in chosen})
    print(f"round {index + 1}/{args.rounds} done", flush=True)
  medians = {name: {step: statistics.median(r[name][step]["steps_per_s"] for r in rounds) for step in STEPS}
             for name in chosen}
  header = f"{'option':34s}" + "".join(f"{step:>22s}" for step in STEPS)
  print(header)
  for name in chosen:
    cells = "".join(f"{medians[name][step]:10.1f} ({medians[name][step] / medians['default'][step]:4.2f}x)  "
                    if "default" in medians else f"{medians[name][step]:20.1f}  " for step in STEPS)
    print(f"{name:34s}{cells}")
  with open(args.out, "w") as file:
    json.dump({"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "options": {
        name: OPTIONS[name] for name in chosen}, "rounds": rounds, "median_steps_per_s": medians,
        "wall_s": round(time.time() - began, 1)}, file, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
