"""D4RL's recipes through the real SAC run, with tiny budgets: files, metadata, row provenance, resuming."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bracplus_jax import data
from bracplus_jax.collection import collect, sac
from bracplus_jax.errors import InputError

ENV = "Hopper-v5"
TINY = collect.RecipeOptions(  # medium_episodes=0: the first evaluation past the threshold
    steps=300, seed=0, reference_episodes=3, progress=False, medium_episodes=0,
    sac=sac.SACConfig(total_steps=2_000, hidden_dims=(32, 32), start_steps=1_000, chunk_steps=250,
                      eval_every=500, eval_episodes=2))


@pytest.fixture(scope="module")
def family(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("family"))
  paths = collect.make_family(ENV, out, TINY)
  run_dir = collect.sac_run_dir(out, ENV, TINY.seed)
  with open(os.path.join(run_dir, sac.RUN_FILE)) as file:
    record = json.load(file)
  return {"out": out, "paths": paths, "run_dir": run_dir, "record": record}


def read(path):
  return collect.read_rows(path), data.read_raw(f"hdf5:{path}").metadata


def test_every_recipe_writes_a_file_the_data_layer_reads(family):
  references = set()
  for recipe, path in family["paths"].items():
    assert os.path.basename(path) == f"{ENV}_{recipe}.hdf5"
    dataset = data.load_dataset(f"hdf5:{path}", progress=False)
    metadata = dataset.metadata
    assert metadata["recipe"] == recipe and metadata["seed"] == 0 and dataset.env_id == ENV
    assert dataset.reference_source == "dataset"
    assert (dataset.ref_min_score, dataset.ref_max_score) == (metadata["ref_min_score"], metadata["ref_max_score"])
    assert metadata["steps"] == len(collect.read_rows(path)["rewards"])
    assert metadata["sac/steps"] == 2_000
    references.add((dataset.ref_min_score, dataset.ref_max_score))
  assert len(references) == 1  # one family, one yardstick
  (random_return, expert_return), = references
  assert random_return < expert_return
  assert {len(collect.read_rows(family["paths"][r])["rewards"]) for r in ("random", "medium", "expert")} == {300}


def test_policy_rollouts_replay_in_the_simulator(family):
  """Rows of 16 side-by-side sub-envs, regrouped into whole episodes, are real steps in order."""
  import gymnasium as gym
  rows, metadata = read(family["paths"]["expert"])
  assert metadata["rollout_envs"] == 16
  ends = rows["terminals"] | rows["timeouts"]
  assert ends[-1] and not (rows["terminals"] & rows["timeouts"]).any()
  inside = np.flatnonzero(~ends[:-1])
  np.testing.assert_array_equal(rows["next_observations"][inside], rows["observations"][inside + 1])
  env = gym.make(ENV)
  env.reset(seed=0)
  for i in range(0, 300, 11):
    env.unwrapped.set_state(rows["infos/qpos"][i].astype(np.float64), rows["infos/qvel"][i].astype(np.float64))
    next_observation, reward, terminated, _, _ = env.step(rows["actions"][i])
    np.testing.assert_allclose(next_observation, rows["next_observations"][i], atol=1e-4)
    assert reward == pytest.approx(rows["rewards"][i], abs=1e-4) and terminated == rows["terminals"][i]
  env.close()


def test_references_come_from_the_random_and_the_best_sac_policy(family):
  _, metadata = read(family["paths"]["expert"])
  best = max(family["record"]["evaluations"], key=lambda evaluation: evaluation["return_mean"])
  assert metadata["expert_policy_step"] == best["step"]
  assert f"step {best['step']}" in metadata["ref_max_source"] and "3 episodes" in metadata["ref_max_source"]
  assert "random policy" in metadata["ref_min_source"]


def test_medium_is_the_first_evaluation_past_the_threshold(family):
  _, metadata = read(family["paths"]["medium"])
  threshold = metadata["ref_min_score"] + 0.33 * (metadata["ref_max_score"] - metadata["ref_min_score"])
  assert metadata["medium_threshold"] == pytest.approx(threshold)
  first = next(e for e in family["record"]["evaluations"] if e["return_mean"] >= threshold)
  assert metadata["medium_policy_step"] == first["step"]
  assert metadata["medium_policy_evaluated_return"] == first["return_mean"]


def test_medium_expert_is_medium_then_expert(family):
  medium, _ = read(family["paths"]["medium"])
  expert, _ = read(family["paths"]["expert"])
  combined, metadata = read(family["paths"]["medium_expert"])
  assert set(combined) == set(medium)
  for key in combined:
    np.testing.assert_array_equal(combined[key], np.concatenate([medium[key], expert[key]]), err_msg=key)
  ends = combined["terminals"] | combined["timeouts"]
  assert ends[299] and ends[-1]  # medium's last episode is closed before expert's first begins
  assert (metadata["medium_rows"], metadata["expert_rows"]) == (300, 300)
  bounds = data.transitions.episode_bounds(data.read_raw(f"hdf5:{family['paths']['medium_expert']}"))
  assert (300 in [start for start, _ in bounds]) and all(end - start > 0 for start, end in bounds)


def test_mixed_is_the_replay_buffer_up_to_the_medium_policy(family):
  mixed, metadata = read(family["paths"]["mixed"])
  replay = sac.load_rows(os.path.join(family["run_dir"], sac.REPLAY_FILE))
  stop = metadata["medium_policy_step"]
  assert len(mixed["rewards"]) == stop == metadata["steps"]
  for key in ("observations", "actions", "rewards", "next_observations", "terminals", "infos/qpos"):
    np.testing.assert_array_equal(mixed[key], replay[key][:stop], err_msg=key)
  expected_timeouts = replay["timeouts"][:stop].copy()
  expected_timeouts[-1] |= not replay["terminals"][stop - 1]  # the unfinished episode is cut
  np.testing.assert_array_equal(mixed["timeouts"], expected_timeouts)
  assert not (mixed["terminals"] & mixed["timeouts"]).any()
  ends = mixed["terminals"] | mixed["timeouts"]
  inside = np.flatnonzero(~ends[:-1])
  np.testing.assert_array_equal(mixed["next_observations"][inside], mixed["observations"][inside + 1])
  assert mixed["terminals"].sum() > 5  # Hopper falls often while it learns


def test_all_resumes_only_the_missing_stage(family):
  paths, out = family["paths"], family["out"]
  original_expert, _ = read(paths["expert"])
  os.remove(paths["expert"])
  kept = {recipe: os.stat(path).st_mtime_ns for recipe, path in paths.items() if recipe != "expert"}
  run_file = os.path.join(family["run_dir"], sac.RUN_FILE)
  run_mtime = os.stat(run_file).st_mtime_ns
  lines = []
  collect.make_family(ENV, out, TINY, report=lines.append)
  assert {recipe: os.stat(paths[recipe]).st_mtime_ns for recipe in kept} == kept
  assert os.stat(run_file).st_mtime_ns == run_mtime  # the trained run was reused, not retrained
  assert sum("exists, kept" in line for line in lines) == 4 and any(line.startswith("expert: wrote") for line in lines)
  again, _ = read(paths["expert"])
  for key in original_expert:
    np.testing.assert_array_equal(again[key], original_expert[key], err_msg=key)


def test_single_recipes_reuse_the_run_and_match_the_family(family, tmp_path):
  for recipe in ("medium", "mixed"):
    out = str(tmp_path / f"{recipe}.hdf5")
    collect.make_recipe(ENV, recipe, out, TINY, workdir=family["out"])
    alone, _ = read(out)
    in_family, _ = read(family["paths"][recipe])
    for key in in_family:
      np.testing.assert_array_equal(alone[key], in_family[key], err_msg=f"{recipe} {key}")

  checkpoint = os.path.join(family["run_dir"], "policy_best.msgpack")
  out = str(tmp_path / "policy.hdf5")
  collect.make_recipe(ENV, f"policy:{checkpoint}", out, dataclasses.replace(TINY, steps=120), workdir=family["out"])
  dataset = data.load_dataset(f"hdf5:{out}", progress=False)
  assert dataset.metadata["recipe"] == "policy" and dataset.metadata["steps"] == 120
  assert dataset.metadata["policy_checkpoint"] == checkpoint and dataset.has_reference_scores


def test_a_run_with_other_settings_is_refused(family, tmp_path):
  other = dataclasses.replace(TINY, sac=dataclasses.replace(TINY.sac, total_steps=2_500, eval_every=500))
  with pytest.raises(InputError, match="total_steps 2000 there, 2500 here"):
    collect.make_recipe(ENV, "expert", str(tmp_path / "x.hdf5"), other, workdir=family["out"])
  assert not os.path.exists(tmp_path / "x.hdf5")


def test_episodes_in_order_regroups_interleaved_sub_envs():
  # Two sub-envs, rows interleaved: env 0 episodes (rows 0, 2 | 4), env 1 episodes (1 | 3, 5).
  rows = {
      "observations": np.arange(6.0)[:, None],
      "env_index": np.array([0, 1, 0, 1, 0, 1]),
      "terminals": np.array([0, 1, 1, 0, 0, 0], bool),
      "timeouts": np.zeros(6, bool),
  }
  regrouped = collect.episodes_in_order(rows)
  np.testing.assert_array_equal(regrouped["observations"][:, 0], [0, 2, 1, 3, 5, 4])
  np.testing.assert_array_equal(regrouped["terminals"], [0, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(regrouped["timeouts"], [0, 0, 0, 0, 1, 1])
  assert "env_index" not in regrouped


def test_random_recipe_from_the_command_line_with_a_given_expert_return(tmp_path):
  """No SAC run is needed when the expert's return is given."""
  out = tmp_path / "random.hdf5"
  result = subprocess.run(
      [sys.executable, "-m", "bracplus_jax.collect", "--env=Hopper-v5", "--recipe=random", "--steps=200",
       "--expert_return=3234.3", "--reference_episodes=3", f"--out={out}"],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  dataset = data.load_dataset(f"hdf5:{out}", progress=False)
  assert dataset.ref_max_score == 3234.3 and dataset.metadata["ref_max_source"] == "--expert_return"
  assert dataset.metadata["recipe"] == "random" and not os.path.exists(tmp_path / f"{ENV}_sac_seed0")


@pytest.mark.parametrize("args, fragment", [
    (["--recipe=bogus"], "--recipe"),
    (["--recipe=policy:/no/such.msgpack"], "no such checkpoint"),
    (["--recipe=medium", "--medium_fraction=1.5"], "--medium_fraction"),
    (["--recipe=expert", "--sac_hidden=a,b"], "--sac_hidden"),
    (["--recipe=expert", "--sac_steps=1550"], "multiple of chunk_steps"),
    (["--recipe=random", "--policy=random"], "--policy"),
])
def test_bad_recipe_flags_get_one_line(tmp_path, args, fragment):
  result = subprocess.run([sys.executable, "-m", "bracplus_jax.collect", "--env=Hopper-v5", *args,
                           f"--out={tmp_path / 'x.hdf5'}"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  assert fragment in result.stderr.strip().splitlines()[-1]
  assert not os.listdir(tmp_path)
