"""The package's wings import one way and in no circle, read from the source files (ast); the
short module names (`python -m bracplus_jax.collect`, ...) stay thin entries to their homes.

Wings, lowest first (the README's Layout section draws them):
  shared         errors, cli, envs, extras, files: what every wing may use
  data           bracplus_jax/data/: datasets read
  blocks         random_bits, distributions, networks: the algorithm's building blocks
  algorithm      losses, learner, config, sweep, train
  collection     bracplus_jax/collection/: datasets made; beside the algorithm, on its blocks
  configs        bracplus_jax/configs/: the packaged configs, on the algorithm and collection
  run machinery  evaluation, checkpoints, run_log, experiment, evaluate, launch (bracplus train)
  studies        bracplus_jax/studies/: toys, ablations, report, evidence, combined
  command line   commands: `bracplus <command>`, which runs any wing's command by name
"""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "bracplus_jax"

TOP_LEVEL_WINGS = {
    "shared": {"errors", "cli", "envs", "extras", "files"},
    "blocks": {"random_bits", "distributions", "networks"},
    "algorithm": {"losses", "learner", "config", "sweep", "train"},
    "run machinery": {"evaluation", "checkpoints", "run_log", "experiment", "evaluate", "launch",
                      "estimate"},
    "command line": {"commands"},
}
SUB_PACKAGE_WINGS = {"data": "data", "collection": "collection", "configs": "configs", "studies": "studies"}
# Each wing's modules may import their own wing's and these wings' modules.
MAY_IMPORT = {
    "shared": set(),
    "data": {"shared"},
    "blocks": {"shared", "data"},
    "algorithm": {"shared", "data", "blocks"},
    "collection": {"shared", "data", "blocks"},
    "configs": {"shared", "data", "blocks", "algorithm", "collection"},
    "run machinery": {"shared", "data", "blocks", "algorithm", "collection"},
    "studies": {"shared", "data", "blocks", "algorithm", "collection", "configs", "run machinery"},
    "command line": {"shared", "data", "blocks", "algorithm", "collection", "configs", "run machinery",
                     "studies"},
}
# What two studies share; a study imports no other study.
STUDIES_SHARED = {"studies.outputs", "studies.run_files", "studies.run_figures", "studies.estimates"}
# Short name -> the module it is. Entry modules only: nothing else imports them.
OLD_NAMES = {
    "collect": "collection.collect", "sac": "collection.sac", "toys": "studies.toys",
    "ablate": "studies.ablate", "evidence": "studies.evidence", "report": "studies.report",
    "combine": "studies.combined",
}
# Short command name -> (arguments its main refuses, how its one-line refusal starts).
OLD_COMMANDS = {"collect": ([], "error: --out: missing"), "toys": ([], "error: --out: missing"),
                "ablate": ([], "error: --config: missing"), "report": ([], "error: --out: missing"),
                "evidence": (["--recipes="], "error: --recipes: none given"),
                "combine": ([], "error: --results: missing")}


def module_name(path: pathlib.Path) -> str:
  """bracplus_jax/data/kinds.py -> 'data.kinds'; a package's __init__.py -> the package."""
  parts = path.relative_to(ROOT / PACKAGE).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, pathlib.Path]:
  return {module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imported_modules(path: pathlib.Path, known: set[str]) -> set[str]:
  """The package's modules `path` imports anywhere in the file (inside functions too), with
  the sub-packages an import runs on the way (importing data.transitions runs data)."""
  found = set()

  def add(dotted: str) -> None:
    if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
      return
    name = dotted.removeprefix(PACKAGE).lstrip(".")
    while name and name not in known:  # `from bracplus_jax.data import load_dataset`
      name = name.rpartition(".")[0]
    parts = name.split(".")
    found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if name)

  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        add(f"{node.module}.{alias.name}")
  return found


def wing(module: str) -> str:
  top = module.split(".")[0]
  if top in SUB_PACKAGE_WINGS:
    return SUB_PACKAGE_WINGS[top]
  for name, members in TOP_LEVEL_WINGS.items():
    if module in members:
      return name
  raise AssertionError(f"bracplus_jax.{module} belongs to no wing: add it to one in {__file__}")


def packages_around(module: str) -> set[str]:
  """The module and the packages it sits in ('data.kinds' -> data.kinds, data), which Python
  has running already when the module imports them."""
  parts = module.split(".")
  return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
  modules = package_modules()
  return {name: imported_modules(path, set(modules)) - packages_around(name) for name, path in modules.items()}


def test_every_module_belongs_to_a_wing_or_is_a_short_name(graph):
  for module in graph:
    if module and module not in OLD_NAMES:
      wing(module)


def test_imports_run_from_a_wing_to_the_wings_below_it(graph):
  wrong = []
  for module, imports in graph.items():
    if not module or module in OLD_NAMES:
      continue
    for target in imports - {""}:
      if target in OLD_NAMES:
        wrong.append(f"{module} imports {target}, a command's short name: import {OLD_NAMES[target]}")
      elif wing(target) != wing(module) and wing(target) not in MAY_IMPORT[wing(module)]:
        wrong.append(f"{module} ({wing(module)}) imports {target} ({wing(target)})")
      elif wing(module) == wing(target) == "studies" and target not in STUDIES_SHARED | {"studies"}:
        wrong.append(f"{module} imports {target}: studies share only {sorted(STUDIES_SHARED)}")
  assert not wrong, "\n".join(wrong)


def test_the_imports_make_no_circle(graph):
  """Depth-first search; a module met again while its own imports are open closes a circle."""
  state, circles = {}, []

  def visit(module, path):
    state[module] = "open"
    for target in sorted(graph.get(module, ())):
      if state.get(target) == "open":
        circles.append(" -> ".join(path[path.index(target):] + [target]))
      elif target not in state:
        visit(target, path + [target])
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert not circles, "\n".join(circles)


def test_the_package_root_imports_nothing(graph):
  assert graph[""] == set()


@pytest.mark.parametrize("path", sorted([*ROOT.glob("benchmarks/*.py"), ROOT / "launch.py"]),
                         ids=lambda path: path.name)
def test_benchmarks_and_launch_import_the_homes(path):
  old = imported_modules(path, set(package_modules())) & set(OLD_NAMES)
  assert not old, f"{path.name} imports {sorted(old)}; import {[OLD_NAMES[name] for name in sorted(old)]}"


def test_short_names_import_only_their_home(graph):
  for old, new in OLD_NAMES.items():
    assert graph[old] - {"cli", new.split(".")[0]} == {new}, old


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_a_short_name_is_its_module(old):
  assert importlib.import_module(f"{PACKAGE}.{old}") is importlib.import_module(f"{PACKAGE}.{OLD_NAMES[old]}")


@pytest.mark.parametrize("old", sorted(OLD_COMMANDS))
def test_a_short_command_name_runs_its_command(old):
  """Its main runs (stopped by a bad input, before any work) and --helpshort shows its usage."""
  def run(*args):
    return subprocess.run([sys.executable, "-m", f"{PACKAGE}.{old}", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)

  args, refusal = OLD_COMMANDS[old]
  stopped = run(*args)
  assert stopped.returncode == 2 and stopped.stderr.startswith(refusal), stopped.stderr
  usage = importlib.import_module(f"{PACKAGE}.{OLD_NAMES[old]}").__doc__.splitlines()[0]
  assert run("--helpshort").stdout.splitlines()[0] == usage
