"""The combine command on small evidence JSONs made here (the layout of
docs/results/hopper-v5.json): per-task numbers as the inputs give them, the aggregates against
direct computations, missed criteria kept, and bad input as one line."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bracplus_jax.errors import InputError
from bracplus_jax.studies import combined

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPS = 200  # few bootstrap draws: the tests check the point estimates and that the CIs hold them

# env -> recipe -> (BC's per-seed scores, BRAC+'s, whether BRAC+'s constraint criterion was met)
TASKS = {
    "Hopper-v5": {"mixed": ([9.5, 16.5, 18.9, 14.5], [31.2, 36.4, 37.1, 33.9], True),
                  "medium": ([48.2, 74.2, 37.8, 32.8], [70.5, 48.3, 40.4, 34.3], False)},
    "Walker2d-v5": {"medium": ([20.0, 25.0, 30.0, 80.0], [22.0, 24.0, 60.0, 61.0], True)},
}
MISSED = "dataset mean KL(s) / eps_KL over the last third, highest seed <= 1.2"


def recipe_entry(bc, brac, constraint_met, index):
  """One recipe of an evidence JSON, with made-up aggregates the combination must carry as they are."""
  def method(scores, offset):
    return {"final_normalized_scores": scores, "final_returns": [10 * v for v in scores],
            "curve": {"updates": [0, 100], "scores": [scores, scores]}, "gradient_steps_per_seed": 100,
            "phase_seconds": {"behavior": 10.0 + offset, "policy_init": 1.0, "critic_init": 2.0, "rl": 30.0,
                              "evaluation": 4.5},
            "run_dir": "x", "mean": float(np.mean(scores)), "iqm": 11.0 * index + offset,
            "mean_ci": [0.0, 1.0], "iqm_ci": [11.0 * index + offset - 1.5, 11.0 * index + offset + 2.5]}
  kl = [0.9, 1.3 if not constraint_met else 1.1]
  return {
      "methods": {"bc": method(bc, 0.0), "brac_plus": method(brac, 3.0)},
      "dataset": "hdf5:x.hdf5",
      "probability_of_improvement": {"point": 0.1 * index, "ci": [0.05 * index, 0.2 * index]},
      "last_third": {},
      "diagnostics": {"initial_critic_q_mc_correlation": [0.9, 0.91], "final_q_mc_correlation": [0.95, 0.96],
                      "final_q_overestimation": [-3.25, 2.0], "last_third_kl_over_threshold": kl,
                      "last_third_share_above_1_2x": [0.04, 0.31], "last_third_max_share_above_1_2x": [0.1, 0.45]},
      "data": {"file": "x.hdf5", "checksum": f"{index:x}" * 64, "rows": 1000 * index,
               "mean_normalized_score": 5.0 * index, "published_family": None},
      "dataset_mean_normalized_score": 5.0 * index,
      "criteria": [{"criterion": "BRAC+ IQM - BC IQM >= -3", "value": 1.0, "met": True},
                   {"criterion": MISSED, "value": max(kl), "met": constraint_met}],
  }


def evidence_json(env, recipes, first_index):
  return {"env": env, "seeds": 4, "config": {"env": env}, "library_versions": {"numpy": np.__version__},
          "recipes": {recipe: recipe_entry(*scores, first_index + i)
                      for i, (recipe, scores) in enumerate(recipes.items())}}


def write_json(path, value):
  path.write_text(json.dumps(value))
  return path


def run(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def one_error_line(result, *fragments):
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """A folder holding hopper-v5.json (and a JSON of another kind, which a folder leaves out),
  and walker2d-v5.json elsewhere, named as a file."""
  root = tmp_path_factory.mktemp("combine")
  (root / "hopper").mkdir()
  write_json(root / "hopper" / "hopper-v5.json", evidence_json("Hopper-v5", TASKS["Hopper-v5"], 1))
  write_json(root / "hopper" / "constraint_hopper-v5.json", {"runs": []})
  walker = write_json(root / "walker2d-v5.json", evidence_json("Walker2d-v5", TASKS["Walker2d-v5"], 3))
  return root, f"{root / 'hopper'},{walker}"


@pytest.fixture(scope="module")
def combined_run(inputs):
  root, results = inputs
  result = run("bracplus_jax.studies.combined", f"--results={results}", f"--out={root / 'out'}",
               f"--bootstrap_reps={REPS}")
  assert result.returncode == 0, result.stderr
  written = json.loads((root / "out" / "three_envs.json").read_text())
  return written, (root / "out" / "three_envs.md").read_text(), root / "out", result.stdout


def test_the_outputs_are_never_overwritten(inputs, combined_run):
  root, results = inputs
  table = (root / "out" / "three_envs.md").read_text()
  one_error_line(run("bracplus_jax.combine", f"--results={results}", f"--out={root / 'out'}",
                     f"--bootstrap_reps={REPS}"), "three_envs.json exists", "never overwritten")
  assert (root / "out" / "three_envs.md").read_text() == table


def interquartile_mean(values):
  """The mean of the middle half of the sorted values (a quarter of them cut at each end)."""
  ordered = np.sort(np.ravel(values))
  cut = len(ordered) // 4
  return ordered[cut:len(ordered) - cut].mean()


def test_the_aggregate_iqm_is_the_iqm_of_all_runs_and_tasks(combined_run):
  written, _, _, _ = combined_run
  tasks = [scores for recipes in TASKS.values() for scores in recipes.values()]
  for index, method in enumerate(("bc", "brac_plus")):
    pooled = np.array([task[index] for task in tasks])  # [tasks, runs]: 12 scores
    entry = written["aggregate"][method]
    assert entry["iqm"] == pytest.approx(interquartile_mean(pooled))
    assert entry["mean"] == pytest.approx(pooled.mean())
    low, high = entry["iqm_ci"]
    assert pooled.min() <= low <= entry["iqm"] <= high <= pooled.max()
  assert written["aggregate"]["tasks"] == 3 and written["aggregate"]["bootstrap_reps"] == REPS
  assert written["aggregate"]["runs_per_task"] == {"bc": 4, "brac_plus": 4}


def test_the_aggregate_probability_of_improvement_is_the_mean_over_tasks(combined_run):
  written, _, _, _ = combined_run
  per_task = []
  for bc, brac, _ in (scores for recipes in TASKS.values() for scores in recipes.values()):
    pairs = np.subtract.outer(brac, bc)
    per_task.append(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0))
  improvement = written["aggregate"]["probability_of_improvement"]
  assert improvement["point"] == pytest.approx(np.mean(per_task))
  assert 0 <= improvement["ci"][0] <= improvement["point"] <= improvement["ci"][1] <= 1


def test_each_task_carries_its_evidence_as_given(inputs, combined_run):
  root, _ = inputs
  written, table, _, _ = combined_run
  assert [(task["env"], task["recipe"]) for task in written["tasks"]] == [
      ("Hopper-v5", "mixed"), ("Hopper-v5", "medium"), ("Walker2d-v5", "medium")]
  sources = {"Hopper-v5": root / "hopper" / "hopper-v5.json", "Walker2d-v5": root / "walker2d-v5.json"}
  for task in written["tasks"]:
    entry = json.loads(sources[task["env"]].read_text())["recipes"][task["recipe"]]
    for method in ("bc", "brac_plus"):
      given = entry["methods"][method]
      assert task[method] == {key: given[key] for key in ("iqm", "iqm_ci", "final_normalized_scores")}
    assert task["probability_of_improvement"] == entry["probability_of_improvement"]
    assert task["data_checksum"] == entry["data"]["checksum"]
    assert task["data_mean_normalized_score"] == entry["dataset_mean_normalized_score"]
    assert task["criteria"] == entry["criteria"] and task["diagnostics"] == entry["diagnostics"]
  # Walker2d-v5's medium is the third entry made: IQMs 33 (BC) and 36 (BRAC+), checksum 333...
  row = next(line for line in table.splitlines() if line.startswith("| Walker2d-v5 | medium |"))
  assert "`333333333333`" in row and "| 15.0 |" in row
  assert "33.0 [31.5, 35.5]" in row and "36.0 [34.5, 38.5]" in row and "0.30 [0.15, 0.60]" in row
  assert "20.0, 25.0, 30.0, 80.0" in row and "22.0, 24.0, 60.0, 61.0" in row


def test_a_missed_criterion_stays_marked_missed_with_its_diagnostics(combined_run):
  written, table, _, _ = combined_run
  medium = written["tasks"][1]
  assert [check["met"] for check in medium["criteria"]] == [True, False]
  assert medium["diagnostics"]["last_third_kl_over_threshold"] == [0.9, 1.3]
  rows = [line for line in table.splitlines() if MISSED in line]
  assert len(rows) == 3
  assert rows[1].startswith("| Hopper-v5 | medium |") and rows[1].endswith("| 1.30 | **missed** |")
  assert rows[0].endswith("| met |") and rows[2].endswith("| met |")
  summary = next(line for line in table.splitlines() if line.startswith("| Hopper-v5 | medium | `"))
  assert summary.endswith("| 1/2 met, **1 missed** |")
  diagnostics = next(line for line in table.splitlines()
                     if line.startswith("| Hopper-v5 | medium | 0.90 / 0.91 |"))
  assert "| 0.90 / 1.30 |" in diagnostics and "0.04 / 0.31 (0.45)" in diagnostics and "-3.2 / 2.0" in diagnostics


def test_wall_times_absent_envs_and_the_figure(combined_run):
  written, table, out, stdout = combined_run
  run_seconds = 10 + 1 + 2 + 30 + 4.5
  per_run = {"Hopper-v5": 2 * (2 * run_seconds + 3), "Walker2d-v5": 2 * run_seconds + 3}
  assert written["wall_seconds"]["per_env"] == pytest.approx(per_run)
  assert written["wall_seconds"]["total"] == pytest.approx(sum(per_run.values()))
  assert "| **total** | 4 min 54 s |" in table
  assert written["absent"] == ["HalfCheetah-v5"] and written["envs"] == ["Hopper-v5", "Walker2d-v5"]
  assert "Absent of the paper's three: HalfCheetah-v5." in table
  assert "absent of the paper's three: HalfCheetah-v5" in stdout
  assert (out / "three_envs.png").read_bytes().startswith(PNG_SIGNATURE)


def test_bad_input_is_one_line_naming_the_file(tmp_path):
  missing = tmp_path / "walker2d-v5.json"
  one_error_line(run("bracplus_jax.commands", "combine", f"--results={missing}", f"--out={tmp_path / 'out'}"),
                 "--results:", str(missing), "does not exist", "bracplus evidence")
  other = write_json(tmp_path / "other.json", {"env": "Hopper-v5", "recipes": {"mixed": {"methods": {}}}})
  one_error_line(run("bracplus_jax.studies.combined", f"--results={other}", f"--out={tmp_path / 'out'}"),
                 str(other), "is not an evidence result", "recipes.mixed.methods.bc.final_normalized_scores",
                 "bracplus evidence")
  assert not (tmp_path / "out").exists()  # nothing is written before every input is read


def test_inputs_that_cannot_be_combined_are_refused(tmp_path):
  (tmp_path / "a").mkdir()
  first = write_json(tmp_path / "a" / "hopper-v5.json", evidence_json("Hopper-v5", TASKS["Hopper-v5"], 1))
  second = write_json(tmp_path / "copy.json", json.loads(first.read_text()))
  with pytest.raises(InputError, match="Hopper-v5 is given twice"):
    combined.read_all(combined.evidence_files(f"{first},{second}"))
  # The folder and the file in it are one input.
  assert list(combined.read_all(combined.evidence_files(f"{tmp_path / 'a'},{first}"))) == ["Hopper-v5"]
  with pytest.raises(InputError, match="holds none of hopper-v5.json"):
    combined.evidence_files(str(tmp_path / "copy.json") + "," + str(tmp_path))
  three_seeds = {"medium": ([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], True)}
  walker = write_json(tmp_path / "w.json", evidence_json("Walker2d-v5", three_seeds, 3))
  with pytest.raises(InputError, match=r"BC has different numbers of seeds \(4 in Hopper-v5 mixed, 3 in Walker2d"):
    combined.combine(combined.read_all([str(first), str(walker)]), reps=10)
  assert combined.duration(3723.4) == "1 h 2 min 3 s" and combined.duration(59) == "59 s"
