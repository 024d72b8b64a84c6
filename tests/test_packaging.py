"""The package as users install it: requirements.txt and pyproject.toml ask for the same packages,
the extras are layered, and a wheel installed into a fresh environment trains from any folder."""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def requirement_lines(path: pathlib.Path) -> list[str]:
  return sorted(line.strip() for line in path.read_text().splitlines()
                if line.strip() and not line.startswith(("#", "-r")))


def expanded(extra: str) -> list[str]:
  """An extra's requirements with the extras it names (`bracplus-jax[evidence]`) spelled out."""
  found = []
  for requirement in EXTRAS[extra]:
    if requirement.startswith("bracplus-jax["):
      for inner in requirement.removeprefix("bracplus-jax[").removesuffix("]").split(","):
        found += expanded(inner)
    else:
      found.append(requirement)
  return list(dict.fromkeys(found))


def test_requirements_match_pyproject_dependencies():
  assert requirement_lines(ROOT / "requirements.txt") == sorted(PYPROJECT["project"]["dependencies"])
  assert requirement_lines(ROOT / "requirements-test.txt") == sorted(expanded("test"))


def test_the_core_trains_and_the_rest_are_extras():
  names = lambda requirements: {r.split(">")[0].split("[")[0].split("<")[0] for r in requirements}  # noqa: E731
  core = names(PYPROJECT["project"]["dependencies"])
  assert {"jax", "flax", "optax", "chex", "orbax-checkpoint", "ml-collections", "absl-py", "numpy", "h5py",
          "tqdm", "gymnasium", "scipy", "pooch"} <= core
  assert {"wandb", "minari", "evidence", "adroit", "d4rl", "gym", "test", "docs", "all"} <= set(EXTRAS)
  optional = {"wandb", "minari", "rliable", "pandas", "matplotlib", "gymnasium-robotics", "gym", "shimmy", "d4rl"}
  assert not core & optional, core & optional  # what the extras add stays out of the core
  names = lambda extra: {r.split(">")[0].split("[")[0].split("<")[0] for r in expanded(extra)}  # noqa: E731
  assert names("evidence") == {"rliable", "pandas", "matplotlib"}
  assert {"wandb", "minari", "rliable", "pytest", "hypothesis", "build"} <= names("test")
  assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names("docs")
  assert names("test") | names("docs") | names("adroit") | names("gym") <= names("all")
  assert PYPROJECT["project"]["scripts"] == {"bracplus": "bracplus_jax.commands:main"}
  assert PYPROJECT["project"]["requires-python"] == ">=3.11"
  assert PYPROJECT["project"]["dynamic"] == ["version"] and "fallback_version" in PYPROJECT["tool"]["setuptools_scm"]


def test_the_slow_marker_is_registered():
  assert any(marker.startswith("slow:") for marker in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"])


def run(args, **kwargs):
  result = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
  return result


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_environment_trains_from_any_folder(tmp_path):
  """Builds the wheel, installs it (alone: the libraries come from this interpreter's
  site-packages, or its venv's) into a new virtual environment, and from a folder outside the
  clone runs
  `bracplus --help` and a training run of a few updates on random Hopper data made there."""
  wheels = tmp_path / "wheels"
  run([sys.executable, "-m", "build", "--wheel", "--outdir", str(wheels), str(ROOT)], timeout=600)
  wheel, = wheels.glob("bracplus_jax-*.whl")
  venv = tmp_path / "venv"
  run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], timeout=300)
  python, script = venv / "bin" / "python", venv / "bin" / "bracplus"
  if sys.prefix != sys.base_prefix:  # run from a venv (.ci/run): its packages, not the base Python's
    site_packages = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        timeout=60).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (pathlib.Path(site_packages) / "outer_environment.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in sorted(ours)))
  run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], timeout=300)

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env |= {"BRACPLUS_DATA": str(tmp_path / "data"), "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
  where = run([str(python), "-c", "import bracplus_jax; print(bracplus_jax.__file__, bracplus_jax.__version__)"],
              cwd=elsewhere, env=env, timeout=120).stdout.split()
  assert where[0].startswith(str(venv)), where  # the wheel's copy, not the clone's
  version = where[1]
  assert wheel.name.startswith(f"bracplus_jax-{version}-")

  help_text = run([str(script), "--help"], cwd=elsewhere, env=env, timeout=120).stdout
  assert "train" in help_text and "evidence" in help_text
  small = "(32, 32)"
  trained = run([str(script), "train", "--config=hopper_local", "--workdir=run",
                 "--config.epochs=1", "--config.steps_per_epoch=20", "--config.behavior_steps=20",
                 "--config.policy_init_steps=20", "--config.critic_init_steps=20", "--config.eval_episodes=0",
                 "--config.make_dataset.steps=2000", "--config.batch_size=32", "--config.wandb.mode=disabled",
                 *(f"--config.algo.{name}_hidden_dims={small}" for name in ("policy", "critic", "behavior", "alpha"))],
                cwd=elsewhere, env=env, timeout=900)
  assert "work: 1 run (seed 0), 80 gradient updates each" in trained.stdout, trained.stdout
  summary = json.loads((elsewhere / "run" / "summary.json").read_text())
  assert summary["gradient_steps_per_seed"] == 80
  assert summary["versions"]["bracplus-jax"] == version
  assert summary["versions"]["bracplus-jax commit"] is None  # an installed wheel is in no git checkout
  assert (tmp_path / "data" / "generated" / "Hopper-v5_random.hdf5").is_file()


def test_the_citation_file_cites_the_paper():
  yaml = pytest.importorskip("yaml")  # PyYAML comes with the docs extra (mkdocs) and wandb
  citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
  assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
  paper = citation["preferred-citation"]
  assert paper["title"] == "BRAC+: Improved Behavior Regularized Actor Critic for Offline Reinforcement Learning"
  assert [author["family-names"] for author in paper["authors"]] == ["Zhang", "Kuppannagari", "Prasanna"]
  assert paper["year"] == 2021 and "2110.00894" in paper["url"]
