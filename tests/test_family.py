"""A family's manifest and the check against it: the figures against direct computations, and
each verdict (identical, same level, different, missing) on a family perturbed on purpose."""

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import h5py
import numpy as np
import pytest

from bracplus_jax.collection import collect, family
from bracplus_jax.errors import InputError
from conftest import episodes_dataset, write_d4rl_file

ENV = "Hopper-v5"
RANDOM_RETURN, EXPERT_RETURN = -5.0, 20.0
# Each recipe's episodes: lengths and how they end; rewards shifted so levels differ.
EPISODES = {"random": ([10, 6, 4], ["terminal", "timeout", "cut"], 0.0),
            "medium": ([8, 12], ["terminal", "timeout"], 0.5),
            "mixed": ([5, 5, 5, 5], ["terminal", "terminal", "timeout", "timeout"], 0.2),
            "expert": ([20], ["timeout"], 1.0)}


def family_rows():
  rows = {}
  for seed, (recipe, (lengths, ends, shift)) in enumerate(EPISODES.items()):
    rows[recipe] = episodes_dataset(lengths, ends, obs_dim=11, act_dim=3, seed=seed)
    rows[recipe]["rewards"] = rows[recipe]["rewards"] + np.float32(shift)
  rows["medium_expert"] = {key: np.concatenate([rows["medium"][key], rows["expert"][key]])
                           for key in rows["medium"]}
  return rows


def write_family(folder, rows=None):
  """The five files as the collector writes them: its arrays and its metadata keys."""
  folder.mkdir(exist_ok=True)
  for recipe, arrays in (rows or family_rows()).items():
    metadata = {"env_id": ENV, "recipe": recipe, "seed": 0, "steps": len(arrays["rewards"]),
                "ref_min_score": RANDOM_RETURN, "ref_max_score": EXPERT_RETURN, "versions/jax": "x"}
    write_d4rl_file(folder / f"{ENV}_{recipe}.hdf5", metadata=metadata, **arrays)
  return folder


def sha256_of(arrays):
  """The checksum computed here: each array as little-endian float32 (flags as bytes), in order,
  after its name and 2-D shape."""
  digest = hashlib.sha256()
  for name, dtype in (("observations", "<f4"), ("actions", "<f4"), ("rewards", "<f4"),
                      ("terminals", "u1"), ("timeouts", "u1")):
    values = np.asarray(arrays[name]).reshape(len(arrays["rewards"]), -1).astype(dtype)
    digest.update(f"{name}{values.shape}".encode())
    digest.update(values.tobytes())
  return digest.hexdigest()


def episode_returns(arrays):
  returns, total = [], 0.0
  for reward, end in zip(arrays["rewards"], arrays["terminals"] | arrays["timeouts"]):
    total += float(reward)
    if end:
      returns.append(total)
      total = 0.0
  if not (arrays["terminals"][-1] or arrays["timeouts"][-1]):
    returns.append(total)  # the last, unfinished episode counts too
  return np.array(returns)


@pytest.fixture
def published(tmp_path):
  """A family in tmp_path/published and its manifest."""
  folder = write_family(tmp_path / "published")
  manifest_path = tmp_path / "family.json"
  collect.write_family_manifest(ENV, str(folder), str(manifest_path))
  return folder, manifest_path


def check(manifest_path, folder):
  """The command as a user runs it: (exit status, stdout lines, stderr)."""
  result = subprocess.run([sys.executable, "-m", "bracplus_jax.collect", f"--check={manifest_path}",
                           f"--out={folder}"], capture_output=True, text=True, timeout=120)
  return result.returncode, result.stdout.strip().splitlines(), result.stderr


def verdicts(lines):
  return {line.split(":")[0]: line.split(": ", 1)[1].split(" (")[0] for line in lines
          if line.startswith(ENV)}


def test_manifest_figures_match_direct_computations(published):
  _, manifest_path = published
  manifest = json.loads(manifest_path.read_text())
  assert list(manifest["files"]) == [f"{ENV}_{recipe}.hdf5" for recipe in collect.RECIPES]
  for recipe, arrays in family_rows().items():
    entry = manifest["files"][f"{ENV}_{recipe}.hdf5"]
    returns = episode_returns(arrays)
    assert entry["recipe"] == recipe
    assert entry["rows"] == len(arrays["rewards"]) and entry["episodes"] == len(returns)
    assert entry["checksum"] == sha256_of(arrays)
    assert entry["mean_return"] == pytest.approx(returns.mean(), abs=0.01)
    expected_score = 100 * (returns.mean() - RANDOM_RETURN) / (EXPERT_RETURN - RANDOM_RETURN)
    assert entry["normalized_score"] == pytest.approx(expected_score, abs=0.01)
    assert (entry["ref_min_score"], entry["ref_max_score"]) == (RANDOM_RETURN, EXPERT_RETURN)
  assert manifest["library_versions"]["jax"] == importlib.metadata.version("jax")
  assert manifest["python"] == platform.python_version()
  assert manifest["machine"]["architecture"] == platform.machine()
  assert manifest["command"] == f"bracplus collect --env={ENV} --recipe=all --steps=20 --out=DIR"


def test_the_same_family_is_identical(published, tmp_path):
  folder, manifest_path = published
  status, lines, _ = check(manifest_path, write_family(tmp_path / "copy"))
  assert status == 0, lines
  assert set(verdicts(lines).values()) == {"identical"} and len(verdicts(lines)) == 5
  assert "library versions: as in the manifest" in lines and "cpu: as in the manifest" in lines


def test_perturbed_deleted_and_missing_files(published, tmp_path):
  _, manifest_path = published
  rows = family_rows()
  rows["medium"]["rewards"][0] += 0.01  # 0.04 normalised points: the same level
  rows["expert"]["rewards"] *= 2  # far from the manifest's level
  rows["medium_expert"] = {key: np.concatenate([rows["medium"][key], rows["expert"][key]]) for key in rows["medium"]}
  folder = write_family(tmp_path / "mine", rows)
  os.remove(folder / f"{ENV}_mixed.hdf5")
  status, lines, _ = check(manifest_path, folder)
  assert status == 1
  assert verdicts(lines) == {f"{ENV}_random.hdf5": "identical", f"{ENV}_medium.hdf5": "same level",
                             f"{ENV}_mixed.hdf5": "missing", f"{ENV}_expert.hdf5": "different",
                             f"{ENV}_medium_expert.hdf5": "different"}


def test_a_file_with_fewer_rows_is_different(published, tmp_path):
  _, manifest_path = published
  rows = family_rows()
  rows["random"] = {key: value[:16] for key, value in rows["random"].items()}  # 20 -> 16 rows
  folder = write_family(tmp_path / "short", rows)
  lines, all_match = family.check_family(family.read_manifest(str(manifest_path)), str(folder))
  assert not all_match and verdicts(lines)[f"{ENV}_random.hdf5"] == "different"


def test_other_versions_and_cpu_are_named(published, tmp_path):
  folder, manifest_path = published
  manifest = json.loads(manifest_path.read_text())
  manifest["library_versions"]["jax"] = "0.0.1"
  manifest["library_versions"]["mujoco"] = "1.0.0"
  manifest["machine"] |= {"cpu_model": "Another CPU", "isa_flags": ["an_isa_of_its_own"]}
  other = tmp_path / "other.json"
  other.write_text(json.dumps(manifest))
  status, lines, _ = check(other, folder)
  assert status == 0  # the files are still identical
  versions = next(line for line in lines if line.startswith("library versions:"))
  assert f"jax {importlib.metadata.version('jax')} here, 0.0.1 in the manifest" in versions
  assert f"mujoco {importlib.metadata.version('mujoco')} here, 1.0.0 in the manifest" in versions
  assert "numpy" not in versions and "flax" not in versions
  cpu = next(line for line in lines if line.startswith("cpu:"))
  assert "Another CPU" in cpu and "only there: ['an_isa_of_its_own']" in cpu


def test_a_real_collector_file_is_described(tmp_path):
  path = str(tmp_path / "random.hdf5")
  options = collect.RecipeOptions(steps=300, expert_return=300.0, reference_episodes=1, progress=False)
  arrays = collect.make_recipe(ENV, "random", path, options)
  entry = family.describe_file(path)
  with h5py.File(path) as file:
    assert entry["episodes"] == file["metadata/episodes"][()]
    reference = file["metadata/ref_min_score"][()]
  assert entry["rows"] == 300 and entry["recipe"] == "random"
  assert entry["checksum"] == hashlib.sha256(
      _canonical_bytes(arrays, ("observations", "actions", "rewards", "terminals", "timeouts",
                                "next_observations"))).hexdigest()
  returns = episode_returns(arrays)
  assert entry["normalized_score"] == pytest.approx(100 * (returns.mean() - reference) / (300.0 - reference), abs=0.01)


def _canonical_bytes(arrays, names):
  chunks = []
  for name in names:
    dtype = "u1" if name in ("terminals", "timeouts") else "<f4"
    values = np.asarray(arrays[name]).reshape(len(arrays["rewards"]), -1).astype(dtype)
    chunks += [f"{name}{values.shape}".encode(), values.tobytes()]
  return b"".join(chunks)


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"),
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"env_id": "Hopper-v5", "files": {}, "machine": {}}', "'library_versions'"),
    ('{"env_id": "Hopper-v5", "files": {"a.hdf5": {"rows": 1}}, "machine": {}, "library_versions": {}}',
     "files.a.hdf5 has no 'normalized_score'"),
])
def test_a_bad_manifest_is_one_line(tmp_path, content, fragment):
  path = tmp_path / "manifest.json"
  if content is not None:
    path.write_text(content)
  status, _, stderr = check(path, tmp_path)
  assert status == 2 and "Traceback" not in stderr, stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: --check:") and str(path) in last and fragment in last


def test_manifest_needs_the_whole_family(tmp_path):
  folder = write_family(tmp_path / "partial")
  os.remove(folder / f"{ENV}_expert.hdf5")
  with pytest.raises(InputError, match="expert.hdf5 missing"):
    family.build_manifest(ENV, str(folder))


def test_the_readme_table_comes_from_the_manifest(published):
  _, manifest_path = published
  result = subprocess.run([sys.executable, "-m", "bracplus_jax.collection.family", str(manifest_path)],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 2 + len(collect.RECIPES)
  arrays = family_rows()["medium_expert"]
  returns = episode_returns(arrays)
  score = 100 * (returns.mean() - RANDOM_RETURN) / (EXPERT_RETURN - RANDOM_RETURN)
  assert lines[-1] == (f"| `{ENV}_medium_expert.hdf5` | {len(arrays['rewards'])} | {len(returns)} | "
                       f"{returns.mean():.1f} | {score:.1f} | -5.0, 20.0 | `{sha256_of(arrays)[:12]}` |")


def test_the_command_writes_the_manifest(published, tmp_path):
  folder, manifest_path = published
  written = tmp_path / "by_command.json"
  result = subprocess.run([sys.executable, "-m", "bracplus_jax.collect", f"--env={ENV}", f"--manifest={written}",
                           f"--out={folder}"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert json.loads(written.read_text()) == json.loads(manifest_path.read_text())
  assert f"wrote {written}" in result.stdout and f"| `{ENV}_random.hdf5` | 20 |" in result.stdout
