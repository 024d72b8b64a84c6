"""requirements.txt and pyproject.toml ask for the same packages, so both install paths agree."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_requirements_match_pyproject_dependencies():
  lines = (ROOT / "requirements.txt").read_text().splitlines()
  requirements = sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))
  pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
  assert requirements == sorted(pyproject["project"]["dependencies"])
  test_lines = (ROOT / "requirements-test.txt").read_text().splitlines()
  test_requirements = sorted(l.strip() for l in test_lines if l.strip() and not l.startswith(("#", "-r")))
  assert test_requirements == sorted(pyproject["project"]["optional-dependencies"]["test"])
