"""The evidence command end to end on a tiny budget (BC and BRAC+, two seeds), its aggregates
against direct computations, and its resume."""

import hashlib
import importlib.metadata
import json
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy import stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bracplus_jax.errors import InputError  # noqa: E402
from bracplus_jax.studies import evidence  # noqa: E402

TINY = {
    "behavior_steps": 40, "policy_init_steps": 20, "critic_init_steps": 20, "epochs": 2,
    "steps_per_epoch": 30, "batch_size": 32, "eval_episodes": 2, "eval_every": 1,
    "make_dataset.steps": 600,
}
WIDTHS = ("policy_hidden_dims", "critic_hidden_dims", "behavior_hidden_dims", "alpha_hidden_dims")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def command(*args):
  overrides = [f"--config.{name}={value}" for name, value in TINY.items()]
  overrides += [f"--config.algo.{name}=(16,16)" for name in WIDTHS]
  return subprocess.run([sys.executable, "-m", "bracplus_jax.evidence", *args, *overrides],
                        capture_output=True, text=True, cwd=ROOT, timeout=900)


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("evidence")
  args = ["--env=Hopper-v5", "--recipes=random", "--seeds=2", f"--workdir={root / 'runs'}",
          f"--data_dir={root / 'data'}"]
  result = command(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  return root, args, result


def test_the_dataset_is_made_and_both_methods_train_every_seed(evidence_run):
  root, _, _ = evidence_run
  assert (root / "data" / "Hopper-v5_random.hdf5").is_file()
  results = json.loads((root / "runs" / "hopper-v5.json").read_text())
  entry = results["recipes"]["random"]
  for method in ("bc", "brac_plus"):
    summary = json.loads((root / "runs" / "random" / method / "summary.json").read_text())
    assert entry["methods"][method]["final_normalized_scores"] == summary["normalized_score"]
    assert len(summary["normalized_score"]) == 2
  bc_curve, brac_curve = (entry["methods"][m]["curve"] for m in ("bc", "brac_plus"))
  assert bc_curve["updates"] == [30, 60]
  assert brac_curve["updates"] == [0, 30, 60]  # epoch 0: the initial policy
  assert np.asarray(brac_curve["scores"]).shape == (3, 2)


def test_aggregates_match_direct_computations(evidence_run):
  root, _, _ = evidence_run
  entry = json.loads((root / "runs" / "hopper-v5.json").read_text())["recipes"]["random"]
  for method in ("bc", "brac_plus"):
    scores = np.asarray(entry["methods"][method]["final_normalized_scores"])
    result = entry["methods"][method]
    assert result["mean"] == pytest.approx(scores.mean())
    assert result["iqm"] == pytest.approx(stats.trim_mean(scores, 0.25))
    low, high = result["iqm_ci"]
    assert scores.min() - 1e-9 <= low <= result["iqm"] <= high <= scores.max() + 1e-9
  brac = np.asarray(entry["methods"]["brac_plus"]["final_normalized_scores"])
  bc = np.asarray(entry["methods"]["bc"]["final_normalized_scores"])
  pairs = brac[:, None] - bc[None, :]
  direct = np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0)
  assert entry["probability_of_improvement"]["point"] == pytest.approx(direct)


def test_last_third_scores_are_each_seeds_mean_of_its_last_evaluations(evidence_run):
  root, _, _ = evidence_run
  entry = json.loads((root / "runs" / "hopper-v5.json").read_text())["recipes"]["random"]
  for method in ("bc", "brac_plus"):
    curve = entry["methods"][method]["curve"]  # evaluations after 30 and 60 updates (and 0)
    window = entry["last_third"][method]
    assert entry["last_third"]["updates"][method] == [60]  # the last third of 60 updates
    assert window["normalized_scores"] == pytest.approx(curve["scores"][-1])
    assert window["iqm"] == pytest.approx(stats.trim_mean(curve["scores"][-1], 0.25))
  curve = {"updates": [0, 3, 6, 9], "scores": [[0, 0], [1, 2], [3, 4], [5, 8]]}
  assert evidence.last_third_scores(curve) == ([5.0, 8.0], [9])
  curve = {"updates": [3, 6, 9, 12, 15, 18], "scores": [[1, 1]] * 4 + [[2, 4], [4, 6]]}
  assert evidence.last_third_scores(curve) == ([3.0, 5.0], [15, 18])


def test_the_results_name_their_data(evidence_run):
  root, _, _ = evidence_run
  results = json.loads((root / "runs" / "hopper-v5.json").read_text())
  record = results["recipes"]["random"]["data"]
  path = root / "data" / "Hopper-v5_random.hdf5"
  digest = hashlib.sha256()
  with h5py.File(path) as file:
    rows = len(file["rewards"])
    for name in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
      values = file[name][()].reshape(rows, -1).astype("u1" if name in ("terminals", "timeouts") else "<f4")
      digest.update(f"{name}{values.shape}".encode())
      digest.update(values.tobytes())
    ends = np.flatnonzero(file["terminals"][()] | file["timeouts"][()]) + 1
    returns = [segment.sum(dtype=np.float64) for segment in np.split(file["rewards"][()], ends) if len(segment)]
  low, high = -20.272305, 3234.3  # a plain random rollout: D4RL's hopper references
  assert record["file"] == str(path) and record["rows"] == rows == 600
  assert record["checksum"] == digest.hexdigest()
  assert record["mean_normalized_score"] == pytest.approx(100 * (np.mean(returns) - low) / (high - low))
  published = json.loads((ROOT / "docs" / "results" / "families" / "Hopper-v5.json").read_text())
  assert record["published_family"] == {
      "manifest": "docs/results/families/Hopper-v5.json", "file": "Hopper-v5_random.hdf5",
      "checksum_matches": published["files"]["Hopper-v5_random.hdf5"]["checksum"] == digest.hexdigest()}
  assert results["library_versions"]["jax"] == importlib.metadata.version("jax")


def test_interval_estimates_of_known_scores():
  scores = np.array([1.0, 2.0, 3.0, 100.0])
  estimate = evidence.interval_estimates({"x": scores})["x"]
  assert estimate["iqm"] == pytest.approx(2.5)  # the middle two of four
  assert estimate["mean"] == pytest.approx(26.5)
  assert evidence.probability_of_improvement(np.array([5.0, 6.0]), np.array([1.0, 2.0]))["point"] == 1.0


def _entry(bc_scores, brac_scores, kl_over_threshold, initial_correlation):
  bc, brac = np.asarray(bc_scores, float), np.asarray(brac_scores, float)
  estimates = evidence.interval_estimates({"bc": bc, "brac_plus": brac})
  methods = {name: estimates[name] | {"final_normalized_scores": list(scores)}
             for name, scores in (("bc", bc), ("brac_plus", brac))}
  return {"methods": methods, "probability_of_improvement": evidence.probability_of_improvement(brac, bc),
          "diagnostics": {"last_third_kl_over_threshold": kl_over_threshold,
                          "initial_critic_q_mc_correlation": initial_correlation}}


def test_criteria_of_mixed_data():
  entry = _entry([10, 12, 14, 16], [30, 32, 34, 36], [0.9, 1.1], [0.5, 0.6])
  checks = {c["criterion"].split(" ")[0] + str(i): c for i, c in enumerate(evidence.criteria("mixed", entry))}
  values = [c["value"] for c in checks.values()]
  met = [c["met"] for c in checks.values()]
  assert values[0] == pytest.approx(33.0 / 13.0, abs=1e-4) and met[0]  # IQMs: the middle two
  assert values[1] > 0 and met[1]  # every BRAC+ seed is above every BC seed: the CIs are apart
  assert values[2] == 1.0 and met[2]
  assert values[3] == pytest.approx(1.1) and met[3]  # the highest seed's KL; no critic check here
  assert len(values) == 4
  entry = _entry([10, 12, 14, 16], [5, 27, 35, 55], [1.0, 1.3], [0.5, 0.6])
  met = [c["met"] for c in evidence.criteria("mixed", entry)]
  assert met == [True, False, False, False]  # 2.38x, but one seed below BC: CIs overlap, P = 0.75


def test_criteria_of_good_data():
  entry = _entry([40, 44, 48, 52], [44, 45, 43, 20], [0.9, 0.95], [0.93, 0.88])
  checks = evidence.criteria("medium", entry)
  assert [c["met"] for c in checks] == [True, False, False, True]
  assert checks[0]["value"] == pytest.approx(np.mean([43, 44]) - np.mean([44, 48]))  # -2.5: within 3
  assert checks[1]["value"] == pytest.approx(20 / (46 / 2), abs=1e-4)
  assert checks[2]["value"] == pytest.approx(0.88)
  assert len(evidence.criteria("medium_expert", entry)) == 3  # the critic's fit is asked of one policy's data


def test_table_and_figures_are_written(evidence_run):
  root, _, result = evidence_run
  table = (root / "runs" / "hopper-v5.md").read_text()
  assert "| random |" in table and "| random |" in result.stdout
  content = (root / "runs" / "hopper-v5_random.png").read_bytes()
  assert content.startswith(PNG_SIGNATURE) and len(content) > 10_000


def test_brac_plus_diagnostics_come_from_its_metrics(evidence_run):
  root, _, result = evidence_run
  found = json.loads((root / "runs" / "hopper-v5.json").read_text())["recipes"]["random"]["diagnostics"]
  records = [json.loads(line) for line in
             (root / "runs" / "random" / "brac_plus" / "metrics.jsonl").read_text().splitlines()]
  initial = {r["seed_index"]: r["q_mc_correlation"] for r in records if r["phase"] == "critic_init"}
  assert found["initial_critic_q_mc_correlation"] == pytest.approx([initial[0], initial[1]], abs=1e-4)
  epochs = [r for r in records if r["phase"] == "epoch"]
  last = max(r["epoch"] for r in epochs)  # 2 epochs: the last third is epoch 2 alone
  for name, metric in (("last_third_kl_over_threshold", "dataset_kl_over_threshold"),
                       ("last_third_share_above_1_2x", "dataset_kl_violation_fraction_1_2x"),
                       ("final_q_mc_correlation", "q_mc_correlation")):
    direct = {r["seed_index"]: r[metric] for r in epochs if r["epoch"] == last}
    assert found[name] == pytest.approx([direct[0], direct[1]], abs=1e-4), name
  evaluations = {r["seed_index"]: r["q_overestimation"] for r in records
                 if r["phase"] == "eval" and r["epoch"] == last}
  assert found["final_q_overestimation"] == pytest.approx([evaluations[0], evaluations[1]], abs=1e-4)
  table = (root / "runs" / "hopper-v5.md").read_text()
  assert "critic and constraint" in table and "initial critic: corr(Q, MC return)" in result.stdout
  for name in ("multiplier", "critic"):
    assert (root / "runs" / f"hopper-v5_random_{name}.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_recipe_may_set_its_own_initial_critic_length():
  from bracplus_jax.configs import evidence as evidence_config
  config = evidence_config.get_config()
  lengths = {recipe: evidence.recipe_config(config, "Hopper-v5", recipe, "brac_plus", 4, "/data")
             for recipe in ("mixed", "medium")}
  assert lengths["mixed"].critic_init_steps == config.recipe_critic_init_steps.mixed
  assert lengths["medium"].critic_init_steps == config.critic_init_steps
  assert lengths["mixed"].critic_init_steps != lengths["medium"].critic_init_steps
  assert "recipe_critic_init_steps" not in lengths["mixed"]  # the run's config keeps its own length


def test_running_it_again_reads_finished_runs_back(evidence_run):
  root, args, _ = evidence_run
  before = (root / "runs" / "random" / "bc" / "metrics.jsonl").read_text()
  result = command(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count("finished earlier, read back") == 2
  assert (root / "runs" / "random" / "bc" / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("text, fragment", [
    ("", "none given"), ("mixed,nonsense", "unknown recipe 'nonsense'"), ("mixed,mixed", "twice"),
])
def test_bad_recipes_are_one_line(text, fragment):
  with pytest.raises(InputError, match=fragment):
    evidence.parse_recipes(text)
