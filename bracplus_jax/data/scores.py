"""D4RL's normalised score and the reference returns it is computed from."""

from __future__ import annotations

from typing import Optional

import numpy as np

# D4RL's reference returns of a random and of an expert policy (d4rl/infos.py),
# shared by every dataset of one environment and by its v0, v1 and v2 versions.
D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
    "ant": (-325.6, 3879.7),
    "pen": (96.262799, 3076.8331017826877),
    "hammer": (-274.856578, 12794.134825156867),
    "door": (-56.512833, 2880.5693087298737),
    "relocate": (-6.425911, 4233.877797728884),
}


def d4rl_reference_returns(name: str) -> Optional[tuple[float, float]]:
  """(random, expert) returns for a D4RL dataset name such as 'hopper-medium-v2'."""
  return D4RL_REFERENCE_RETURNS.get(name.split("-")[0])


def normalized_score(returns, ref_min_score: float, ref_max_score: float) -> np.ndarray:
  """D4RL's score: 100 * (return - random) / (expert - random)."""
  returns = np.asarray(returns, dtype=np.float64)
  return 100.0 * (returns - ref_min_score) / (ref_max_score - ref_min_score)


def d4rl_reference_returns_for_env(env_id: str) -> Optional[tuple[float, float]]:
  """D4RL's references for an env id of the same task ('Hopper-v5', 'gym:hopper-medium-v2' -> hopper).

  gymnasium's v5 MuJoCo tasks keep the v2 tasks' observations, actions and
  rewards, so D4RL's references are the customary yardstick for them too.
  """
  family = env_id.removeprefix("gym:").split("-")[0].lower().removeprefix("adroithand")
  return D4RL_REFERENCE_RETURNS.get(family)
