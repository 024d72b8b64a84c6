"""A family's manifest: what each of its files holds and what made it; another folder checked
against one.

  bracplus collect --env=Hopper-v5 --manifest=docs/results/families/Hopper-v5.json --out=DIR
  bracplus collect --check=docs/results/families/Hopper-v5.json --out=DIR
  python -m bracplus_jax.collection.family docs/results/families/Hopper-v5.json   # the README's table

The collector is deterministic for one set of library versions on one kind of CPU; other
versions make a somewhat different family. The manifest holds, per file, its rows, episodes,
mean return, normalised score (with the file's own references) and the checksum of its
arrays (`data.identity.arrays_checksum`), and for the family the library versions, Python,
the CPU and the collector's options. A check says, per file, whether a user's copy is
`identical`, at the `same level`, `different` or `missing`, then which versions differ.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any, Optional

import numpy as np

from bracplus_jax import data
from bracplus_jax.cli import exits_cleanly_on_input_errors
from bracplus_jax.files import write_json_atomically
from bracplus_jax.data.identity import arrays_checksum, library_versions
from bracplus_jax.data.kinds import KINDS
from bracplus_jax.data.scores import normalized_score
from bracplus_jax.data.transitions import episode_bounds
from bracplus_jax.errors import InputError

MANIFEST_FORMAT = 1
# A file is at the same level as the manifest's when its mean normalised score is within
# this many points of it and its rows within this fraction.
SCORE_TOLERANCE = 3.0
ROWS_TOLERANCE = 0.01
# The CPU features that decide which instructions XLA's CPU compiler emits.
XLA_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
                 "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# Where the published families' manifests live: docs/ beside the package.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILIES_DIR = os.path.join(REPOSITORY, "docs", "results", "families")


def family_file_name(env_id: str, recipe: str) -> str:
  return f"{env_id}_{recipe}.hdf5"


def published_manifest_path(env_id: str) -> str:
  return os.path.join(FAMILIES_DIR, f"{env_id}.json")


def describe_file(path: str) -> dict[str, Any]:
  """One file's figures: recipe, rows, episodes, mean return and normalised score (its own
  references), the references and its arrays' checksum."""
  raw = data.read_raw(f"hdf5:{path}")
  returns = np.array([raw.rewards[start:end].sum(dtype=np.float64) for start, end in episode_bounds(raw)])
  description = {
      "recipe": raw.metadata.get("recipe"),
      "rows": int(len(raw.rewards)),
      "episodes": int(len(returns)),
      "mean_return": round(float(returns.mean()), 2),
      "normalized_score": None,
      "ref_min_score": raw.ref_min_score,
      "ref_max_score": raw.ref_max_score,
      "checksum": arrays_checksum(raw),
  }
  if raw.ref_min_score is not None and raw.ref_max_score is not None:
    score = normalized_score(returns.mean(), raw.ref_min_score, raw.ref_max_score)
    description["normalized_score"] = round(float(score), 2)
  return description


def machine() -> dict[str, Any]:
  """The CPU XLA compiles for: its model, architecture and the instruction-set features that
  decide XLA's code (from /proc/cpuinfo where there is one)."""
  model, features = platform.processor() or "unknown", set()
  try:
    with open("/proc/cpuinfo") as file:
      for line in file:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in ("unknown", platform.machine()):
          model = value.strip()
        elif key.strip() == "flags" and not features:
          features = set(value.split())
  except OSError:
    pass
  return {"cpu_model": model, "architecture": platform.machine(), "cpu_count": os.cpu_count(),
          "isa_flags": [flag for flag in XLA_ISA_FLAGS if flag in features]}


def _collector_options(metadata: dict[str, Any]) -> dict[str, Any]:
  """The options the collector stores in its files' metadata: seed, rows per rollout, SAC..."""
  keys = ("seed", "medium_fraction", "medium_threshold", "medium_policy_step",
          "medium_policy_evaluated_return", "medium_episodes", "medium_policy_reevaluated_return", "expert_policy_step", "expert_policy_evaluated_return",
          "rollout_envs", "ref_min_source", "ref_max_source", "sac/seconds")
  options = {key: metadata[key] for key in keys if key in metadata}
  if "sac/config" in metadata:
    options["sac"] = json.loads(metadata["sac/config"])
  return options


def build_manifest(env_id: str, folder: str, command: str = "") -> dict[str, Any]:
  """The manifest of the family <folder>/<env>_<recipe>.hdf5, every recipe's file present;
  `command` is the one that made it."""
  paths = {recipe: os.path.join(folder, family_file_name(env_id, recipe)) for recipe in KINDS}
  missing = [path for path in paths.values() if not os.path.isfile(path)]
  if missing:
    raise InputError(f"--out: {', '.join(missing)} missing; a manifest describes a whole family "
                     f"({', '.join(KINDS)})")
  files = {os.path.basename(path): describe_file(path) for path in paths.values()}
  medium_expert = data.read_raw(f"hdf5:{paths['medium_expert']}").metadata  # holds every option
  options = _collector_options(medium_expert)
  made_with = {key.removeprefix("versions/"): value for key, value in medium_expert.items()
               if key.startswith("versions/")}
  return {
      "format": MANIFEST_FORMAT,
      "env_id": env_id,
      "command": command,
      "collector_options": options,
      "library_versions": library_versions(),
      "versions_stored_in_files": made_with,
      "python": platform.python_version(),
      "machine": machine(),
      "tolerance": {"normalized_score_points": SCORE_TOLERANCE, "rows_fraction": ROWS_TOLERANCE},
      "files": files,
  }


def write_manifest(manifest: dict[str, Any], path: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    write_json_atomically(path, manifest)
  except OSError as error:
    raise InputError(f"--manifest: cannot write {path} ({error.strerror})") from error


def read_manifest(path: str, flag: str = "--check") -> dict[str, Any]:
  """A manifest, checked: one line naming the file and what was expected when it is not one."""
  try:
    with open(path) as file:
      manifest = json.load(file)
  except FileNotFoundError:
    raise InputError(f"{flag}: {path}: no such file; expected a family manifest such as "
                     "docs/results/families/Hopper-v5.json") from None
  except (OSError, UnicodeDecodeError) as error:
    raise InputError(f"{flag}: {path}: cannot be read ({error})") from None
  except json.JSONDecodeError as error:
    raise InputError(f"{flag}: {path}: not JSON ({error.msg} at line {error.lineno}); "
                     "expected a family manifest") from None
  if not isinstance(manifest, dict):
    raise InputError(f"{flag}: {path}: holds a {type(manifest).__name__}; expected a JSON object")
  for key, kind in (("env_id", str), ("files", dict), ("library_versions", dict), ("machine", dict)):
    if not isinstance(manifest.get(key), kind):
      raise InputError(f"{flag}: {path}: key '{key}' missing or not a {kind.__name__}; "
                       "expected a manifest written by --manifest")
  for name, entry in manifest["files"].items():
    for key in ("rows", "normalized_score", "checksum"):
      if not isinstance(entry, dict) or key not in entry:
        raise InputError(f"{flag}: {path}: files.{name} has no '{key}'; expected a manifest written by --manifest")
  return manifest


def compare_file(path: str, expected: dict[str, Any]) -> tuple[str, str]:
  """(verdict, detail) of one file against its manifest entry: identical, same level, different, missing."""
  if not os.path.isfile(path):
    return "missing", "no such file"
  try:
    found = describe_file(path)
  except InputError as error:
    return "different", f"unreadable ({error})"
  if found["checksum"] == expected["checksum"]:
    return "identical", f"checksum {found['checksum'][:12]}"
  score, expected_score = found["normalized_score"], expected["normalized_score"]
  detail = (f"normalised {'n/a' if score is None else f'{score:.1f}'} here, "
            f"{'n/a' if expected_score is None else f'{expected_score:.1f}'} in the manifest; "
            f"{found['rows']:,} rows here, {expected['rows']:,} there")
  same_rows = abs(found["rows"] - expected["rows"]) <= ROWS_TOLERANCE * expected["rows"]
  same_score = (score is not None and expected_score is not None
                and abs(score - expected_score) <= SCORE_TOLERANCE)
  return ("same level" if same_rows and same_score else "different"), detail


def check_family(manifest: dict[str, Any], folder: str) -> tuple[list[str], bool]:
  """Report lines comparing folder's files and this installation with the manifest, and whether
  every file is identical or at the same level."""
  lines, all_match = [], True
  for name, expected in manifest["files"].items():
    verdict, detail = compare_file(os.path.join(folder, name), expected)
    all_match &= verdict in ("identical", "same level")
    lines.append(f"{name}: {verdict} ({detail})")
  here = library_versions()
  differing = [f"{package} {version} here, {manifest['library_versions'][package]} in the manifest"
               for package, version in here.items()
               if package in manifest["library_versions"] and manifest["library_versions"][package] != version]
  lines.append("library versions: " + ("as in the manifest" if not differing else "; ".join(differing)))
  if platform.python_version() != manifest.get("python", platform.python_version()):
    lines.append(f"python: {platform.python_version()} here, {manifest['python']} in the manifest")
  cpu, expected_cpu = machine(), manifest["machine"]
  cpu_differences = []
  if cpu["cpu_model"] != expected_cpu.get("cpu_model") or cpu["architecture"] != expected_cpu.get("architecture"):
    cpu_differences.append(f"{cpu['cpu_model']} ({cpu['architecture']}) here, "
                           f"{expected_cpu.get('cpu_model')} ({expected_cpu.get('architecture')}) in the manifest")
  flags_here, flags_there = set(cpu["isa_flags"]), set(expected_cpu.get("isa_flags", []))
  if flags_here != flags_there:
    cpu_differences.append(f"ISA flags only here: {sorted(flags_here - flags_there) or 'none'}, "
                           f"only there: {sorted(flags_there - flags_here) or 'none'}")
  lines.append("cpu: " + ("as in the manifest" if not cpu_differences else "; ".join(cpu_differences)))
  summary = "every file identical or at the same level" if all_match else "some files differ or are missing"
  lines.append(f"{summary} (same level: normalised score within {SCORE_TOLERANCE:g} points, "
               f"rows within {ROWS_TOLERANCE:.0%})")
  return lines, all_match


def manifest_match(env_id: str, file_name: str, checksum: str,
                   manifest_path: Optional[str] = None) -> Optional[dict[str, Any]]:
  """Where a dataset file stands against its family's published manifest, or None without one."""
  path = manifest_path or published_manifest_path(env_id)
  if not os.path.isfile(path):
    return None
  manifest = read_manifest(path, flag="manifest")
  entry = manifest["files"].get(file_name)
  return {"manifest": os.path.relpath(path, REPOSITORY), "file": file_name if entry else None,
          "checksum_matches": bool(entry) and entry["checksum"] == checksum}


def manifest_table(manifest: dict[str, Any]) -> list[str]:
  """The README's table of a family: one row per file, from its manifest."""
  lines = ["| file | rows | episodes | mean return | normalised | references (random, expert) | checksum |",
           "|---|---|---|---|---|---|---|"]
  for name, entry in manifest["files"].items():
    score = "n/a" if entry["normalized_score"] is None else f"{entry['normalized_score']:.1f}"
    references = "n/a" if entry.get("ref_min_score") is None else (
        f"{entry['ref_min_score']:.1f}, {entry['ref_max_score']:.1f}")
    lines.append(f"| `{name}` | {entry['rows']:,} | {entry['episodes']:,} | {entry['mean_return']:.1f} | "
                 f"{score} | {references} | `{entry['checksum'][:12]}` |")
  return lines


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  """python -m bracplus_jax.collection.family MANIFEST: the README's table of a family."""
  if len(argv) != 2:
    raise InputError("usage: python -m bracplus_jax.collection.family <manifest.json>; expected one path")
  print("\n".join(manifest_table(read_manifest(argv[1], flag="manifest"))))


if __name__ == "__main__":
  main(sys.argv)
