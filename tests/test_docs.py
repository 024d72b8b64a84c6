"""The documentation: the site builds in strict mode, and the README stays short with every
relative link pointing to a file."""

import os
import pathlib
import re
import subprocess
import sys
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 260

# [text](target) and ![alt](target), the target up to whitespace or the closing bracket.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def relative_link_targets(markdown: str) -> list[str]:
  """The relative link and image targets of a Markdown text, outside code blocks and spans."""
  text = FENCE.sub("", markdown)
  text = re.sub(r"`[^`\n]*`", "", text)
  targets = []
  for target in MARKDOWN_LINK.findall(text):
    parsed = urllib.parse.urlparse(target)
    if parsed.scheme or parsed.netloc or target.startswith(("#", "/", "mailto:")):
      continue
    targets.append(target)
  return targets


def test_the_site_builds_in_strict_mode(tmp_path):
  pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install \".[docs]\")")
  pytest.importorskip("material", reason="mkdocs-material is not installed (pip install \".[docs]\")")
  pytest.importorskip("mkdocstrings_handlers.python",
                      reason="mkdocstrings' python handler is not installed (pip install \".[docs]\")")
  result = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
       "--config-file", str(ROOT / "mkdocs.yml")],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
  assert result.returncode == 0, result.stdout + result.stderr
  assert (tmp_path / "site" / "index.html").is_file()
  assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_the_readme_is_short():
  lines = README.read_text(encoding="utf-8").splitlines()
  assert len(lines) <= README_MAX_LINES, (
      f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES} and move the rest "
      "to docs/")


def test_every_relative_link_in_the_readme_points_to_a_file():
  targets = relative_link_targets(README.read_text(encoding="utf-8"))
  assert targets, "README.md links to nothing under the repository"
  missing = []
  for target in targets:
    path = urllib.parse.unquote(target.split("#", 1)[0])
    if path and not (ROOT / path).exists():
      missing.append(target)
  assert not missing, f"README.md links to files that do not exist: {missing}"


@pytest.mark.parametrize("markdown, expected", [
    ("[a](docs/x.md) ![b](docs/figures/y.png)", ["docs/x.md", "docs/figures/y.png"]),
    ("[a](https://example.org/x) [b](#anchor) [c](docs/x.md#part)", ["docs/x.md#part"]),
    ("`[not](a/link.md)`\n```\n[nor](this.md)\n```\n[but](this.md)", ["this.md"]),
])
def test_links_are_read_from_markdown_outside_code(markdown, expected):
  assert relative_link_targets(markdown) == expected
