"""The `bracplus` command: a subcommand per job, --config by a packaged config's name, and one
line naming the pip command when an extra is missing."""

import os
import pathlib
import subprocess
import sys

import pytest

from bracplus_jax import cli, commands, envs, extras, run_log
from bracplus_jax import data as data_lib
from bracplus_jax.errors import InputError

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "bracplus_jax" / "configs"


def bracplus(*args, cwd, code=""):
  """`bracplus <args>` as the console script runs it (`bracplus_jax.commands.main`), from `cwd`,
  after `code` (which may hide a package to stand for an install without its extra)."""
  program = f"import sys\n{code}\nfrom bracplus_jax.commands import main\nmain(['bracplus', *sys.argv[1:]])"
  return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, cwd=cwd,
                        timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def one_error_line(result, *fragments):
  assert result.returncode == 2, (result.stdout, result.stderr)
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]
  return lines[-1]


def test_help_lists_every_command_with_one_line(tmp_path):
  result = bracplus("--help", cwd=tmp_path)
  assert result.returncode == 0
  listed = {}
  for line in result.stdout.splitlines():
    words = line.split(maxsplit=1)
    if line.startswith("  ") and words and words[0] in commands.COMMANDS:
      listed[words[0]] = words[1]
  assert list(listed) == list(commands.COMMANDS) == [
      "train", "evaluate", "collect", "data", "evidence", "combine", "ablate", "report", "toys"]
  assert all(summary.strip() for summary in listed.values())


def test_no_command_or_an_unknown_one_is_refused(tmp_path):
  assert bracplus(cwd=tmp_path).returncode == 2
  one_error_line(bracplus("trian", cwd=tmp_path), "unknown command 'trian'", "train")


def test_version(tmp_path):
  result = bracplus("--version", cwd=tmp_path)
  # The version the same interpreter and path find (installed metadata, or a build's egg-info).
  version = bracplus("-", cwd=tmp_path, code="import bracplus_jax; print(bracplus_jax.__version__); sys.exit(0)")
  assert result.returncode == 0 and result.stdout.strip() == f"bracplus {version.stdout.strip()}"
  assert version.stdout.strip() not in ("", "0+unknown")


@pytest.mark.parametrize("name", sorted(commands.COMMANDS))
def test_every_command_runs_a_module_with_a_main_and_a_usage(name):
  import importlib
  module = importlib.import_module(commands.COMMANDS[name].module)
  assert callable(module.main)
  assert module.__doc__.splitlines()[0].startswith(f"bracplus {name}")


def test_a_config_by_name_by_old_path_or_by_a_file_of_ones_own(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # not the clone: the packaged files are found from anywhere
  hopper_local = str(PACKAGED / "hopper_local.py")
  assert cli.resolve_config("hopper_local") == hopper_local
  assert cli.resolve_config("hopper_local:mixed") == hopper_local + ":mixed"
  assert cli.resolve_config("evidence") == str(PACKAGED / "evidence.py")
  assert cli.resolve_config("configs/hopper_local.py:mixed") == hopper_local + ":mixed"
  assert cli.resolve_config("./configs/hopper_mixed.py") == str(PACKAGED / "hopper_mixed.py")
  for missing in ("no_such_task", "configs/no_such_task.py", "base_", "__init__", "sub/hopper_local.py"):
    assert cli.resolve_config(missing) == missing
  # A file of one's own wins, even under a packaged config's name.
  (tmp_path / "configs").mkdir()
  mine = tmp_path / "configs" / "hopper_local.py"
  mine.write_text("def get_config():\n  return {}\n")
  assert cli.resolve_config("configs/hopper_local.py:x") == "configs/hopper_local.py:x"
  assert "hopper_local" in cli.packaged_configs() and "base" not in cli.packaged_configs()


def test_the_evidence_default_config_loads_from_any_folder(tmp_path):
  # The evidence command's --config defaults to the packaged evidence config; a bad --recipes
  # stops it after its flags (the default config included) were parsed.
  one_error_line(bracplus("evidence", "--recipes=", cwd=tmp_path), "--recipes: none given")


def test_train_takes_a_packaged_name_from_any_folder(tmp_path):
  one_error_line(bracplus("train", "--config=hopper_local", "--config.num_seeds=0", cwd=tmp_path),
                 "config.num_seeds = 0")
  one_error_line(bracplus("train", "--config=hopper_local:replay", cwd=tmp_path), "'replay'")
  one_error_line(bracplus("train", "--config=hopper_loca", cwd=tmp_path), "hopper_loca does not exist",
                 "hopper_local")


def test_a_command_needing_a_missing_extra_says_which_pip_command(tmp_path):
  hide = "sys.modules['matplotlib'] = None"
  line = one_error_line(bracplus("report", "--out=figures", cwd=tmp_path, code=hide), "bracplus report", "matplotlib")
  assert line.endswith('pip install "bracplus-jax[evidence]"')
  line = one_error_line(bracplus("evidence", cwd=tmp_path, code="sys.modules['rliable'] = None"), "rliable")
  assert line.endswith('pip install "bracplus-jax[evidence]"')


def test_missing_extras_in_the_library_are_one_line_each(monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)
  with pytest.raises(InputError, match=r"config.wandb.mode = 'online'.*pip install \"bracplus-jax\[wandb\]\""):
    run_log.require_wandb("online")
  run_log.require_wandb("disabled")
  assert run_log.wandb_mode("auto") == "disabled"  # 'auto' without W&B: local files only
  monkeypatch.setitem(sys.modules, "minari", None)
  with pytest.raises(InputError, match=r"minari:D4RL/door/human-v2.*pip install \"bracplus-jax\[minari\]\""):
    data_lib.load_dataset("minari:D4RL/door/human-v2", progress=False)
  monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)
  with pytest.raises(InputError, match=r"AdroitHandPen-v1.*pip install \"bracplus-jax\[adroit\]\""):
    envs.make("AdroitHandPen-v1")


def test_every_optional_import_is_an_extra_s():
  """The packages the code imports only where a feature needs them are the extras' modules."""
  assert set(extras.EXTRA_OF) == {"wandb", "minari", "rliable", "pandas", "matplotlib", "gymnasium_robotics",
                                  "gym", "shimmy", "d4rl"}
  assert extras.install_hint("evidence") == 'pip install "bracplus-jax[evidence]"'
