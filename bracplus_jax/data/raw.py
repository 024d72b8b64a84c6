"""A dataset as stored: D4RL's row layout, in host memory, before any transition is built."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass
class RawDataset:
  """Rows in D4RL's layout: row i holds (s_i, a_i, r_i) and how step i ended.

  `terminals[i]` is true when the environment terminated after step i and
  `timeouts[i]` when a time limit (or the end of a logged episode) cut it.
  `next_observations` is present when the source stores it (Minari always,
  D4RL v2 and files written by `bracplus_jax.collection.collect`).
  """

  source: str  # where it came from, for messages: a path or a spec
  observations: np.ndarray  # [N, obs_dim]
  actions: np.ndarray  # [N, act_dim]
  rewards: np.ndarray  # [N]
  terminals: np.ndarray  # [N] bool
  timeouts: np.ndarray  # [N] bool
  next_observations: Optional[np.ndarray] = None  # [N, obs_dim]
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Normalised-score references: D4RL's tables, Minari's ref_min/max_score or
  # a collected file's metadata; None where no reference is known.
  ref_min_score: Optional[float] = None
  ref_max_score: Optional[float] = None
  env_id: Optional[str] = None  # a gymnasium id to evaluate in, where known
