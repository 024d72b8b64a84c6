"""D4RL downloads: cached, complete or absent, never partial; retried; checked against a
known hash where there is one; served here from loopback."""

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest

from bracplus_jax import data
from bracplus_jax.data import d4rl_source
from bracplus_jax.errors import InputError
from conftest import episodes_dataset, write_d4rl_file


class _TruncatingHandler(http.server.SimpleHTTPRequestHandler):
  """Announces the whole file, sends half of it, then hangs up."""

  def do_GET(self):
    body = (self.directory_path / self.path.lstrip("/")).read_bytes()
    self.send_response(200)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body[: len(body) // 2])

  def log_message(self, *args):
    pass


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


def counting(handler):
  """`handler` counting its GET requests in .calls["GET"] (one count per class made here)."""
  calls = {"GET": 0}

  def do_GET(self):
    calls["GET"] += 1
    handler.do_GET(self)

  return type(f"Counting{handler.__name__}", (handler,), {"do_GET": do_GET, "calls": calls})


class _FlakyHandler(_QuietHandler):
  """Answers 503 to the first request and serves the file from the second on."""

  def do_GET(self):
    if self.calls["GET"] == 1:
      self.send_error(503, "busy")
      return
    super().do_GET()


@pytest.fixture
def served(tmp_path, monkeypatch):
  """Serves a folder on loopback; points d4rl:hopper-medium-replay-v2 at a file in it."""
  servers = []

  def serve(handler, rows):
    root = tmp_path / "server"
    root.mkdir(exist_ok=True)
    write_d4rl_file(root / "hopper_medium_replay-v2.hdf5", **rows)
    handler_class = type("Handler", (handler,), {"directory_path": root})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler_class, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    url = f"http://127.0.0.1:{server.server_port}/hopper_medium_replay-v2.hdf5"
    monkeypatch.setitem(d4rl_source.DATASET_URLS, "hopper-medium-replay-v2", url)
    return url

  monkeypatch.setenv("BRACPLUS_DATA", str(tmp_path / "cache"))
  monkeypatch.setattr(d4rl_source, "RETRY_WAIT_SECONDS", 0.0)
  for name in ("http_proxy", "HTTP_PROXY"):
    monkeypatch.delenv(name, raising=False)
  yield serve
  for server in servers:
    server.shutdown()


def hopper_rows():
  return episodes_dataset([30, 20], ["terminal", "timeout"], obs_dim=11, act_dim=3)


def test_download_lands_in_the_cache_and_loads_with_d4rl_references(served, tmp_path):
  rows = hopper_rows()
  served(_QuietHandler, rows)
  dataset = data.load_dataset("d4rl:hopper-medium-replay-v2", progress=False)
  cached = tmp_path / "cache" / "d4rl" / "hopper_medium_replay-v2.hdf5"
  assert cached.is_file() and sorted(p.name for p in cached.parent.iterdir()) == [cached.name]
  np.testing.assert_array_equal(np.asarray(dataset.transitions.actions), rows["actions"][:49])  # row 49 ends in a timeout
  assert (dataset.ref_min_score, dataset.ref_max_score) == (-20.272305, 3234.3)
  assert dataset.env_id == "Hopper-v5"
  # Once cached, no network is needed: the next load reads the file.
  d4rl_source.DATASET_URLS["hopper-medium-replay-v2"] = "http://127.0.0.1:9/hopper_medium_replay-v2.hdf5"
  again = data.load_dataset("d4rl:hopper-medium-replay-v2", progress=False)
  assert again.transitions.size == dataset.transitions.size


def test_an_interrupted_download_is_retried_then_leaves_no_file(served, tmp_path):
  handler = counting(_TruncatingHandler)
  served(handler, hopper_rows())
  with pytest.raises(InputError, match="could not download d4rl:hopper-medium-replay-v2"):
    d4rl_source.fetch("hopper-medium-replay-v2", progress=False)
  assert handler.calls["GET"] == d4rl_source.DOWNLOAD_RETRIES + 1
  assert list((tmp_path / "cache" / "d4rl").iterdir()) == []


def test_a_failed_request_is_retried(served, tmp_path):
  handler = counting(_FlakyHandler)
  served(handler, hopper_rows())
  path = d4rl_source.fetch("hopper-medium-replay-v2", progress=True)
  assert handler.calls["GET"] == 2
  assert path == tmp_path / "cache" / "d4rl" / "hopper_medium_replay-v2.hdf5"
  assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_a_known_hash_is_checked(served, tmp_path, monkeypatch):
  served(_QuietHandler, hopper_rows())
  served_file = tmp_path / "server" / "hopper_medium_replay-v2.hdf5"
  digest = hashlib.sha256(served_file.read_bytes()).hexdigest()
  monkeypatch.setitem(d4rl_source.KNOWN_HASHES, "hopper-medium-replay-v2", "sha256:" + "0" * 64)
  with pytest.raises(InputError, match="could not download d4rl:hopper-medium-replay-v2"):
    d4rl_source.fetch("hopper-medium-replay-v2", progress=False)
  assert list((tmp_path / "cache" / "d4rl").iterdir()) == []
  monkeypatch.setitem(d4rl_source.KNOWN_HASHES, "hopper-medium-replay-v2", f"sha256:{digest}")
  path = d4rl_source.fetch("hopper-medium-replay-v2", progress=False)
  assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_no_hash_is_listed_unchecked():
  """D4RL publishes no hashes: the table holds only checked ones, in pooch's form."""
  for name, known_hash in d4rl_source.KNOWN_HASHES.items():
    assert name in d4rl_source.DATASET_URLS and known_hash.startswith("sha256:") and len(known_hash) == 71


@pytest.mark.parametrize("name, url", [
    ("hopper-medium-replay-v2",
     "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium_replay-v2.hdf5"),
    ("walker2d-medium-replay-v0",
     "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco/walker_mixed.hdf5"),
    ("halfcheetah-medium-expert-v1",
     "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v1/halfcheetah_medium_expert-v1.hdf5"),
    ("pen-human-v1", "http://rail.eecs.berkeley.edu/datasets/offline_rl/hand_dapg_v1/pen-human-v1.hdf5"),
    ("door-human-v0",
     "http://rail.eecs.berkeley.edu/datasets/offline_rl/hand_dapg/door-v0_demos_clipped.hdf5"),
])
def test_urls_are_d4rl_s(name, url):
  assert d4rl_source.dataset_url(name) == url


def test_episode_lengths_for_files_without_timeouts():
  assert d4rl_source.max_episode_steps("hopper-medium-v0") == 1000
  assert d4rl_source.max_episode_steps("pen-human-v0") == 100
  assert d4rl_source.max_episode_steps("door-human-v0") == 200
