"""Every kind of bad dataset gets one clear line through the real command, and no traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import episodes_dataset, write_d4rl_file


def run_data_command(*args, env=None):
  result = subprocess.run(
      [sys.executable, "-m", "bracplus_jax.data", *args], capture_output=True, text=True,
      env={**os.environ, **(env or {})}, timeout=120)
  return result


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  # MuJoCo itself may warn about a model file; ours is the one 'error:' line, last.
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def good_rows():
  return episodes_dataset([5, 5], ["terminal", "timeout"], obs_dim=11, act_dim=3)


def test_missing_file(tmp_path):
  path = tmp_path / "absent.hdf5"
  assert_one_line_error(run_data_command(f"hdf5:{path}"), str(path), "no such file")


def test_not_hdf5(tmp_path):
  path = tmp_path / "notes.hdf5"
  path.write_text("observations,actions\n1,2\n")
  assert_one_line_error(run_data_command(f"hdf5:{path}"), str(path), "HDF5")


def test_truncated_file(tmp_path):
  path = write_d4rl_file(tmp_path / "whole.hdf5", **good_rows())
  content = open(path, "rb").read()
  truncated = tmp_path / "truncated.hdf5"
  truncated.write_bytes(content[: len(content) // 2])
  assert_one_line_error(run_data_command(f"hdf5:{truncated}"), str(truncated))


def test_missing_key(tmp_path):
  rows = good_rows()
  del rows["rewards"]
  path = write_d4rl_file(tmp_path / "norewards.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, "'rewards'")


def test_missing_timeouts_on_a_user_file(tmp_path):
  rows = good_rows()
  del rows["timeouts"]
  path = write_d4rl_file(tmp_path / "notimeouts.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, "'timeouts'")


def test_mismatched_lengths(tmp_path):
  rows = good_rows()
  rows["actions"] = rows["actions"][:-2]
  path = write_d4rl_file(tmp_path / "short.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, "'actions' has 8 rows", "10")


@pytest.mark.parametrize("key, bad", [("observations", np.nan), ("rewards", np.inf),
                                      ("actions", np.nan), ("next_observations", -np.inf)])
def test_nan_or_inf(tmp_path, key, bad):
  rows = good_rows()
  rows["next_observations"] = rows["observations"] + 1
  rows[key][3] = bad
  path = write_d4rl_file(tmp_path / "nan.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, f"'{key}'", "row 3")


def test_actions_outside_the_box_are_refused_by_default_and_clipped_on_request(tmp_path):
  rows = good_rows()
  rows["actions"][2, 1] = -1.25
  path = write_d4rl_file(tmp_path / "wide.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, "outside [-1, 1]", "--clip_actions")
  clipped = run_data_command("--clip_actions", f"hdf5:{path}")
  assert clipped.returncode == 0, clipped.stderr
  assert "transitions        9" in clipped.stdout


def test_empty_dataset(tmp_path):
  rows = {k: v[:0] for k, v in good_rows().items()}
  path = write_d4rl_file(tmp_path / "empty.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, "empty")


def test_only_timeout_rows_leave_no_transitions(tmp_path):
  rows = episodes_dataset([1, 1], ["timeout", "timeout"])
  path = write_d4rl_file(tmp_path / "timeouts.hdf5", **rows)
  assert_one_line_error(run_data_command(f"hdf5:{path}"), path, "no transitions")


def test_dims_that_do_not_match_the_environment(tmp_path):
  path = write_d4rl_file(tmp_path / "hopperish.hdf5", **good_rows())
  assert_one_line_error(run_data_command("--env=HalfCheetah-v5", f"hdf5:{path}"),
                        path, "HalfCheetah-v5", "(17,)")
  rows = episodes_dataset([5, 5], ["terminal", "timeout"], obs_dim=11, act_dim=2)
  path = write_d4rl_file(tmp_path / "twoactions.hdf5", **rows)
  assert_one_line_error(run_data_command("--env=Hopper-v5", f"hdf5:{path}"),
                        path, "'actions'", "(3,)")


def test_unknown_environment(tmp_path):
  path = write_d4rl_file(tmp_path / "ok.hdf5", **good_rows())
  assert_one_line_error(run_data_command("--env=Hoppper-v5", f"hdf5:{path}"), "Hoppper-v5")


def test_unknown_d4rl_name_lists_the_known_ones():
  result = run_data_command("d4rl:hopper-medum-v2")
  assert_one_line_error(result, "d4rl:hopper-medum-v2", "hopper-medium-v2", "pen-human-v1")


def test_bad_spec_form():
  assert_one_line_error(run_data_command("hopper.hdf5"), "hdf5:hopper.hdf5")
  assert_one_line_error(run_data_command("s3:bucket/x"), "s3:bucket/x", "d4rl:<name>")


def test_no_network_for_a_download_says_where_to_put_the_file(tmp_path):
  # Port 9 on loopback refuses the connection: what a machine with no network sees.
  env = {"BRACPLUS_DATA": str(tmp_path), "http_proxy": "http://127.0.0.1:9",
         "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
  result = run_data_command("d4rl:hopper-medium-replay-v2", env=env)
  expected = tmp_path / "d4rl" / "hopper_medium_replay-v2.hdf5"
  assert_one_line_error(result, "could not download d4rl:hopper-medium-replay-v2",
                        f"put it at {expected}")
  assert list((tmp_path / "d4rl").iterdir()) == []  # no partial file is left behind


def test_a_good_file_prints_a_summary(tmp_path):
  path = write_d4rl_file(tmp_path / "good.hdf5", metadata={"env_id": "Hopper-v5"}, **good_rows())
  result = run_data_command(f"hdf5:{path}")
  assert result.returncode == 0, result.stderr
  assert "transitions        9" in result.stdout
  assert "episodes           2" in result.stdout
  assert "D4RL's references for Hopper" in result.stdout
