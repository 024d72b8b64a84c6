"""bracplus collect: D4RL-style datasets for gymnasium MuJoCo envs, in D4RL's HDF5 format.

  bracplus collect --env=Hopper-v5 --recipe=all --out=datasets/hopper
  bracplus collect --env=Hopper-v5 --recipe=medium --steps=1000000 --out=hopper_medium.hdf5
  bracplus collect --env=Hopper-v5 --policy=random --steps=100000 --out=hopper_random.hdf5
  bracplus collect --env=Hopper-v5 --manifest=family.json --out=datasets/hopper
  bracplus collect --check=docs/results/families/Hopper-v5.json --out=datasets/hopper

Recipes follow D4RL (Fu et al. 2020), with behaviour policies trained
here by SAC (`bracplus_jax.collection.sac`):
  random         a uniform random policy
  medium         the SAC policy whose return over --medium_episodes=N (20) fresh
                 episodes is nearest --medium_fraction of the way from the random
                 policy's return to the expert's, among those evaluated near it;
                 N = 0: the first evaluation whose return reached that point
  mixed          medium-replay: SAC's replay buffer up to that evaluation, in order
  expert         the best evaluated SAC policy of the run (--sac_steps)
  medium_expert  medium's rows followed by expert's
  policy:<file>  any policy checkpoint saved by `bracplus_jax.collection.sac`
  all            the five above as <out>/<env>_<recipe>.hdf5; files that exist are kept

Policies act by sampling from pi(.|s). Every recipe file holds
metadata/ref_min_score and metadata/ref_max_score, the mean returns of the
random and of the expert policy (or --expert_return), so normalised scores work
for any environment. The SAC run lives in <workdir>/<env>_sac_seed<seed>/ and
is reused by later calls with the same settings. `--policy=random` (no
recipe) writes a plain random rollout without references.

Each file holds observations, actions, rewards, terminals, timeouts,
next_observations, infos/qpos, infos/qvel and metadata/*, and reads back with
`bracplus data hdf5:<out>`. An existing file is never overwritten.

--manifest=FILE writes the manifest of the family in --out (`collection.family`): per file
its rows, episodes, mean return, normalised score and arrays' checksum, and the library
versions, Python, CPU and options that made it. --check=FILE compares the family in --out
with a manifest: per file `identical` (same checksum), `same level` (normalised score within
3 points, rows within 1%), `different` or `missing`, then the library versions and CPU that
differ. It exits with status 0 when every file is identical or at the same level, 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import sys
from typing import Callable, Optional

from absl import flags
import gymnasium as gym
import h5py
import numpy as np
import tqdm

from bracplus_jax.collection import family, sac
from bracplus_jax.cli import exits_cleanly_on_input_errors, refuse_arguments, run_command
from bracplus_jax.collection.family import family_file_name
from bracplus_jax.data.identity import library_versions
from bracplus_jax.data.kinds import KINDS
from bracplus_jax.errors import InputError
from bracplus_jax.files import atomic_path

Policy = Callable[[np.ndarray], np.ndarray]  # one observation -> one action in [-1, 1]


def random_policy(env: gym.Env, seed: int) -> Policy:
  """Uniform over the action box, as D4RL's random datasets."""
  rng = np.random.default_rng(seed)
  low, high = env.action_space.low, env.action_space.high
  return lambda observation: rng.uniform(low, high).astype(np.float32)


POLICIES = {"random": random_policy}


def make_env(env_id: str) -> gym.Env:
  try:
    env = gym.make(env_id)
  except gym.error.Error as error:
    raise InputError(f"--env: gymnasium does not know '{env_id}' ({error})") from error
  space = env.action_space
  if not isinstance(space, gym.spaces.Box) or space.low.min() < -1 or space.high.max() > 1:
    env.close()
    raise InputError(
        f"--env: {env_id} has action space {space}; expected a Box inside [-1, 1], "
        "which a tanh policy covers")
  return env


def rollout(env: gym.Env, policy: Policy, steps: int, seed: int, progress: bool = True,
            description: str = "collecting") -> dict:
  """`steps` rows in D4RL's layout; the last, unfinished episode ends in a timeout."""
  rows = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts",
                              "next_observations", "infos/qpos", "infos/qvel")}
  mujoco_data = getattr(env.unwrapped, "data", None)
  observation, _ = env.reset(seed=seed)
  for step in tqdm.trange(steps, desc=description, unit="step", disable=not progress):
    if mujoco_data is not None:
      rows["infos/qpos"].append(mujoco_data.qpos.copy())
      rows["infos/qvel"].append(mujoco_data.qvel.copy())
    action = policy(observation)
    next_observation, reward, terminated, truncated, _ = env.step(action)
    # A terminal on the time limit's last step stays a terminal, not a cut.
    truncated = (truncated or step == steps - 1) and not terminated
    for key, value in (("observations", observation), ("actions", action),
                       ("rewards", reward), ("terminals", terminated),
                       ("timeouts", truncated), ("next_observations", next_observation)):
      rows[key].append(value)
    observation = env.reset()[0] if (terminated or truncated) else next_observation
  dtypes = {"terminals": bool, "timeouts": bool}
  return {key: np.asarray(values, dtype=dtypes.get(key, np.float32))
          for key, values in rows.items() if values}


# The versions a file records as metadata (versions/<package>).
FILE_VERSIONED_PACKAGES = ("bracplus-jax", "gymnasium", "mujoco", "numpy", "jax")


def write_dataset(path: str, arrays: dict, metadata: dict) -> None:
  """Writes to a temporary name beside `path`, renamed only once complete; never overwrites."""
  if os.path.exists(path):
    raise InputError(f"--out: {path} exists; it is never overwritten, choose another path")
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:
    raise InputError(f"--out: cannot create the folder {directory} ({error.strerror})") from error
  try:
    with atomic_path(path, overwrite=False) as partial:
      with h5py.File(partial, "w") as file:
        for key, value in arrays.items():
          file.create_dataset(key, data=value, compression="gzip", compression_opts=1)
        for key, value in metadata.items():
          file[f"metadata/{key}"] = value
  except FileExistsError as error:
    raise InputError(f"--out: {path} appeared while collecting; it is left as it was") from error
  except OSError as error:
    raise InputError(f"--out: cannot write {path} ({error})") from error


def collect(env_id: str, policy_name: str, steps: int, out: str, seed: int = 0,
            progress: bool = True) -> dict:
  """Checks every argument, rolls the policy out and writes the file; returns its arrays."""
  if policy_name not in POLICIES:
    raise InputError(f"--policy: unknown policy '{policy_name}'; known: {', '.join(POLICIES)}")
  if steps < 1:
    raise InputError(f"--steps: {steps}; expected a positive number of environment steps")
  if os.path.exists(out):
    raise InputError(f"--out: {out} exists; it is never overwritten, choose another path")
  env = make_env(env_id)
  try:
    arrays = rollout(env, POLICIES[policy_name](env, seed), steps, seed, progress)
  finally:
    env.close()
  metadata = {
      "env_id": env_id, "policy": policy_name, "seed": seed, "steps": steps,
      "episodes": int((arrays["terminals"] | arrays["timeouts"]).sum()),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      **{f"versions/{name}": version for name, version in library_versions(FILE_VERSIONED_PACKAGES).items()},
  }
  write_dataset(out, arrays, metadata)
  return arrays


# ---------------------------------------------------------------------------
# D4RL's recipes: behaviour policies trained here with SAC
# ---------------------------------------------------------------------------

RECIPES = KINDS  # one recipe per kind of D4RL dataset
# Each rollout recipe draws its own episodes: offsets added to --seed.
ROLLOUT_SEED_OFFSETS = {"random": 0, "medium": 1, "expert": 2, "policy": 3}
REFERENCE_SEED_OFFSET = 7
MEDIUM_SEED_OFFSET = 11
# With --medium_episodes, the evaluations evaluated again: those whose return lies within this
# share of the random-to-threshold distance of the threshold, until one lies above that band.
MEDIUM_CANDIDATE_BAND = 0.5

# 2 x 128 trains ~3x faster than 2 x 256 on a small CPU, so 200k steps fit in well under an hour.
DEFAULT_SAC = sac.SACConfig(total_steps=200_000, hidden_dims=(128, 128))


@dataclasses.dataclass(frozen=True)
class RecipeOptions:
  """Everything a recipe depends on besides the env and where its file goes."""

  steps: int = 100_000  # rows of each rollout recipe
  seed: int = 0
  sac: sac.SACConfig = DEFAULT_SAC  # its seed is replaced by `seed`
  medium_fraction: float = 0.33
  expert_return: Optional[float] = None  # taken as the expert's return instead of measuring it
  reference_episodes: int = 10
  # N > 0: the policies near the threshold are evaluated again over N episodes each and the one
  # closest to it is medium (over SAC seeds 0-2: 32.7, 32.8, 33.1). 0: the first SAC
  # evaluation past the threshold, from its 5 noisy episodes (32.7, 81.1, 33.1).
  medium_episodes: int = 20
  progress: bool = True

  def validate(self) -> None:
    if self.steps < 1:
      raise InputError(f"--steps: {self.steps}; expected a positive number of environment steps")
    if not 0.0 < self.medium_fraction < 1.0:
      raise InputError(f"--medium_fraction: {self.medium_fraction}; expected a number in (0, 1)")
    if self.reference_episodes < 1:
      raise InputError(f"--reference_episodes: {self.reference_episodes}; expected at least 1")
    if self.medium_episodes < 0:
      raise InputError(f"--medium_episodes: {self.medium_episodes}; expected 0 (SAC's own evaluations) or more")
    try:
      self.sac.validate()
    except ValueError as error:
      raise InputError(f"--sac_*: {error}") from error


def sac_run_dir(workdir: str, env_id: str, seed: int) -> str:
  return os.path.join(workdir, f"{env_id}_sac_seed{seed}")


class SACRun:
  """A finished SAC run in its folder: the evaluations, a checkpoint for each, the replay rows."""

  def __init__(self, run_dir: str, record: dict):
    self.run_dir = run_dir
    self.record = record

  @property
  def evaluations(self) -> list[dict]:
    return self.record["evaluations"]

  @property
  def best(self) -> dict:
    """The first evaluation with the highest return: the expert."""
    return max(self.evaluations, key=lambda evaluation: evaluation["return_mean"])

  def checkpoint(self, evaluation: dict) -> sac.PolicyCheckpoint:
    # Paths are looked up beside run.json, so a moved folder still works.
    return sac.load_policy(os.path.join(self.run_dir, os.path.basename(evaluation["checkpoint"])))

  def replay_rows(self) -> dict[str, np.ndarray]:
    return sac.load_rows(os.path.join(self.run_dir, sac.REPLAY_FILE))


def _json_ready(value):
  return json.loads(json.dumps(value))


def train_or_reuse(env_id: str, options: RecipeOptions, workdir: str) -> SACRun:
  """The finished SAC run in workdir with these settings; trains it first if there is none.

  A run is finished once its run.json exists; an unfinished one (stopped
  during training) is trained again from the start.
  """
  run_dir = sac_run_dir(workdir, env_id, options.seed)
  run_file = os.path.join(run_dir, sac.RUN_FILE)
  config = dataclasses.replace(options.sac, seed=options.seed)
  if not os.path.exists(run_file):
    sac.train(env_id, config, run_dir, keep_every_evaluation=True, save_replay_buffer=True,
              progress=options.progress, description=f"SAC {env_id}")
  with open(run_file) as file:
    record = json.load(file)
  wanted = _json_ready(dataclasses.asdict(config))
  if record.get("env_id") != env_id or record.get("config") != wanted:
    differences = [f"{key} {record.get('config', {}).get(key)} there, {value} here"
                   for key, value in wanted.items() if record.get("config", {}).get(key) != value]
    raise InputError(
        f"--workdir: {run_dir} holds a SAC run with other settings ({'; '.join(differences)}); "
        "pass the same --sac_* flags, or another --workdir")
  return SACRun(run_dir, record)


@dataclasses.dataclass(frozen=True)
class References:
  """The returns normalised scores are measured against."""

  random_return: float
  expert_return: float
  random_source: str
  expert_source: str


def episodes_in_order(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Replay rows regrouped so each episode is contiguous, episodes ordered by their first row.

  Rows of several sub-envs arrive interleaved (`env_index`); each sub-env's
  last, unfinished episode is cut with a timeout. One sub-env's rows are
  returned as they are, but for that cut.
  """
  env_index = rows["env_index"]
  ends = rows["terminals"] | rows["timeouts"]
  timeouts = rows["timeouts"].copy()
  episode_start = np.zeros(len(env_index), np.int64)
  for env in np.unique(env_index):
    index = np.flatnonzero(env_index == env)
    timeouts[index[-1]] |= not rows["terminals"][index[-1]]
    env_ends = ends[index]
    episode_number = np.concatenate([[0], np.cumsum(env_ends)[:-1]])
    first_rows = index[np.flatnonzero(np.concatenate([[True], env_ends[:-1]]))]
    episode_start[index] = first_rows[episode_number]
  order = np.lexsort((np.arange(len(env_index)), episode_start))
  regrouped = {key: value[order] for key, value in rows.items() if key != "env_index"}
  regrouped["timeouts"] = timeouts[order]
  return regrouped


def read_rows(path: str) -> dict[str, np.ndarray]:
  """Every array of a file this module wrote, by key, without the metadata."""
  rows = {}
  with h5py.File(path, "r") as file:
    def visit(name, item):
      if isinstance(item, h5py.Dataset) and not name.startswith("metadata/"):
        rows[name] = item[()]
    file.visititems(visit)
  return rows


ROLLOUT_ENVS = 16  # sub-envs side by side: one policy call serves 16 steps


def vector_rollout(env_id: str, policy: sac.BatchPolicy, steps: int, seed: int, progress: bool = True,
                   description: str = "collecting", num_envs: int = ROLLOUT_ENVS) -> dict[str, np.ndarray]:
  """`steps` rows of a policy acting in `num_envs` sub-envs, regrouped into whole episodes.

  Episodes are ordered by their first step; the episodes still running when
  the rows are complete, and the last row kept, end in a timeout.
  """
  envs = sac.make_vector_env(env_id, num_envs)
  buffer = sac.buffer_for(envs, steps + num_envs)
  collector = sac.Collector(envs, seed)
  try:
    with tqdm.tqdm(total=steps, desc=description, unit="step", disable=not progress) as bar:
      while buffer.size < steps:
        before = buffer.size
        collector.collect(buffer, min(10_000, steps - buffer.size), policy)
        bar.update(min(buffer.size, steps) - before)
  finally:
    envs.close()
  rows = {key: value[:steps] for key, value in episodes_in_order(buffer.rows()).items()}
  rows["timeouts"][-1] = not rows["terminals"][-1]
  return rows


class Family:
  """One environment's recipes: the SAC run, the references and each recipe's rows, made at most once.

  `existing` maps recipes to files already written; their rows are read back
  rather than made again (medium_expert reuses medium's and expert's).
  """

  def __init__(self, env_id: str, options: RecipeOptions, workdir: str,
               existing: Optional[dict[str, str]] = None):
    self.env_id = env_id
    self.options = options
    self.workdir = workdir
    self.existing = dict(existing or {})
    self._rows: dict[str, dict[str, np.ndarray]] = {}

  @functools.cached_property
  def run(self) -> SACRun:
    return train_or_reuse(self.env_id, self.options, self.workdir)

  @functools.cached_property
  def references(self) -> References:
    """Mean returns of the random and the expert policy over `reference_episodes` episodes."""
    episodes, seed = self.options.reference_episodes, self.options.seed + REFERENCE_SEED_OFFSET
    env = make_env(self.env_id)
    action_space = env.action_space
    env.close()
    random_returns = sac.evaluate(self.env_id, sac.random_batch_policy(action_space, seed), episodes, seed)
    random_source = f"random policy, mean of {episodes} episodes"
    if self.options.expert_return is not None:
      return References(float(random_returns.mean()), self.options.expert_return, random_source,
                        "--expert_return")
    expert = self.run.best
    expert_returns = sac.evaluate(
        self.env_id, self.run.checkpoint(expert).batch_policy(seed), episodes, seed)
    return References(float(random_returns.mean()), float(expert_returns.mean()), random_source,
                      f"SAC expert policy (step {expert['step']}), mean of {episodes} episodes")

  @property
  def medium_threshold(self) -> float:
    """medium_fraction of the way from the random policy's return to the expert's."""
    references = self.references
    return references.random_return + self.options.medium_fraction * (
        references.expert_return - references.random_return)

  @functools.cached_property
  def medium(self) -> dict:
    """The first evaluation of the SAC run that reached the medium threshold; with
    medium_episodes, the policy nearest the threshold over that many fresh episodes."""
    threshold = self.medium_threshold
    first_past = next((evaluation for evaluation in self.run.evaluations
                       if evaluation["return_mean"] >= threshold), None)
    if first_past is not None and self.options.medium_episodes:
      return self.closest_to(threshold) or first_past
    if first_past is not None:
      return first_past
    raise InputError(
        f"SAC on {self.env_id} never reached the medium threshold {threshold:.1f} (best evaluated "
        f"return {self.run.best['return_mean']:.1f}); raise --sac_steps or lower --medium_fraction")

  def closest_to(self, threshold: float) -> Optional[dict]:
    """The evaluation whose policy's mean return over medium_episodes fresh episodes is nearest
    the threshold, among those SAC evaluated near it before any evaluation far past it (the
    expert aside); None when there are none.

    SAC's own evaluations average a few episodes, so the first past the threshold may
    have crossed it by luck, or jumped far past it between two evaluations."""
    band = MEDIUM_CANDIDATE_BAND * (threshold - self.references.random_return)
    candidates = []
    for evaluation in self.run.evaluations:
      if evaluation["return_mean"] > threshold + band:
        break  # past the medium level: later policies are partly trained experts, not medium ones
      if abs(evaluation["return_mean"] - threshold) <= band and evaluation["step"] != self.run.best["step"]:
        candidates.append(evaluation)
    seed = self.options.seed + MEDIUM_SEED_OFFSET
    measured = [dict(evaluation, reevaluated_return=float(sac.evaluate(
        self.env_id, self.run.checkpoint(evaluation).batch_policy(seed), self.options.medium_episodes, seed).mean()))
                for evaluation in candidates]
    return min(measured, key=lambda evaluation: abs(evaluation["reevaluated_return"] - threshold), default=None)

  def rows(self, recipe: str) -> dict[str, np.ndarray]:
    if recipe not in self._rows:
      if recipe in self.existing:
        self._rows[recipe] = read_rows(self.existing[recipe])
      else:
        self._rows[recipe] = self._make_rows(recipe)
    return self._rows[recipe]

  def _make_rows(self, recipe: str) -> dict[str, np.ndarray]:
    if recipe == "random":
      env = make_env(self.env_id)
      try:
        return rollout(env, random_policy(env, self.options.seed), self.options.steps, self.options.seed,
                       self.options.progress, description="random")
      finally:
        env.close()
    if recipe in ("medium", "expert"):
      evaluation = self.medium if recipe == "medium" else self.run.best
      return self.rollout_checkpoint(self.run.checkpoint(evaluation), recipe)
    if recipe == "mixed":
      replay = self.run.replay_rows()
      medium_rows = self.medium["step"]
      return episodes_in_order({key: value[:medium_rows] for key, value in replay.items()})
    if recipe == "medium_expert":
      medium, expert = self.rows("medium"), self.rows("expert")
      return {key: np.concatenate([medium[key], expert[key]]) for key in medium}
    raise InputError(f"--recipe: unknown recipe '{recipe}'; known: {', '.join(RECIPES)}, policy:<file>, all")

  def rollout_checkpoint(self, checkpoint: sac.PolicyCheckpoint, recipe: str) -> dict[str, np.ndarray]:
    seed = self.options.seed + ROLLOUT_SEED_OFFSETS[recipe]
    return vector_rollout(self.env_id, checkpoint.batch_policy(seed), self.options.steps, seed,
                          self.options.progress, description=recipe)

  def metadata(self, recipe: str, arrays: dict[str, np.ndarray]) -> dict:
    """What the file says about itself: recipe, seeds, step counts, references, provenance."""
    references = self.references
    metadata = {
        "env_id": self.env_id, "recipe": recipe, "seed": self.options.seed,
        "steps": len(arrays["rewards"]),
        "episodes": int((arrays["terminals"] | arrays["timeouts"]).sum()),
        "ref_min_score": references.random_return, "ref_max_score": references.expert_return,
        "ref_min_source": references.random_source, "ref_max_source": references.expert_source,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{f"versions/{name}": version for name, version in library_versions(FILE_VERSIONED_PACKAGES).items()},
    }
    if recipe in ("medium", "expert", "policy"):
      metadata["rollout_envs"] = ROLLOUT_ENVS
    if recipe in ("random", "policy") and self.options.expert_return is not None:
      return metadata  # no SAC run behind this file
    run = self.run
    metadata |= {"sac/steps": run.record["config"]["total_steps"],
                 "sac/config": json.dumps(run.record["config"]), "sac/seconds": run.record["seconds"]}
    if recipe in ("medium", "mixed", "medium_expert"):
      metadata |= {"medium_fraction": self.options.medium_fraction, "medium_threshold": self.medium_threshold,
                   "medium_policy_step": self.medium["step"],
                   "medium_policy_evaluated_return": self.medium["return_mean"]}
      if "reevaluated_return" in self.medium:
        metadata |= {"medium_episodes": self.options.medium_episodes,
                     "medium_policy_reevaluated_return": self.medium["reevaluated_return"]}
    if recipe in ("expert", "medium_expert"):
      metadata |= {"expert_policy_step": run.best["step"],
                   "expert_policy_evaluated_return": run.best["return_mean"]}
    if recipe == "medium_expert":
      metadata |= {"medium_rows": len(self.rows("medium")["rewards"]),
                   "expert_rows": len(self.rows("expert")["rewards"])}
    return metadata


def check_recipe(recipe: str) -> None:
  if recipe not in RECIPES and recipe != "all" and not recipe.startswith("policy:"):
    raise InputError(f"--recipe: unknown recipe '{recipe}'; known: {', '.join(RECIPES)}, policy:<file>, all")


def load_checkpoint_for(path: str, env_id: str) -> sac.PolicyCheckpoint:
  if not os.path.isfile(path):
    raise InputError(f"--recipe=policy:{path}: no such checkpoint file")
  try:
    checkpoint = sac.load_policy(path)
  except (ValueError, KeyError) as error:
    raise InputError(f"--recipe=policy:{path}: {error}") from error
  if checkpoint.env_id != env_id:
    raise InputError(f"--recipe=policy:{path}: the policy was trained on {checkpoint.env_id}, not {env_id}")
  return checkpoint


def make_recipe(env_id: str, recipe: str, out: str, options: RecipeOptions = RecipeOptions(),
                workdir: Optional[str] = None) -> dict[str, np.ndarray]:
  """Makes one recipe's file at `out` (never overwritten); SAC runs live in workdir (default: out's folder)."""
  check_recipe(recipe)
  if recipe == "all":
    raise InputError("--recipe=all writes a folder of files; use make_family")
  options.validate()
  if os.path.exists(out):
    raise InputError(f"--out: {out} exists; it is never overwritten, choose another path")
  make_env(env_id).close()
  family = Family(env_id, options, workdir or os.path.dirname(os.path.abspath(out)))
  if recipe.startswith("policy:"):
    path = recipe.removeprefix("policy:")
    checkpoint = load_checkpoint_for(path, env_id)
    arrays = family.rollout_checkpoint(checkpoint, "policy")
    metadata = family.metadata("policy", arrays) | {
        "policy_checkpoint": os.path.abspath(path), "policy_step": checkpoint.step,
        "policy_evaluated_return": float("nan") if checkpoint.evaluated_return is None
        else checkpoint.evaluated_return}
  else:
    arrays = family.rows(recipe)
    metadata = family.metadata(recipe, arrays)
  write_dataset(out, arrays, metadata)
  return arrays


def make_family(env_id: str, out_dir: str, options: RecipeOptions = RecipeOptions(),
                workdir: Optional[str] = None,
                report: Callable[[str], None] = lambda line: None) -> dict[str, str]:
  """Every recipe's file in out_dir as <env>_<recipe>.hdf5; files that exist are kept and reused.

  A stopped run resumes: finished files are skipped, and a finished SAC run
  in workdir (default: out_dir) is reused. Returns recipe -> path.
  """
  options.validate()
  make_env(env_id).close()
  paths = {recipe: os.path.join(out_dir, family_file_name(env_id, recipe)) for recipe in RECIPES}
  existing = {recipe: path for recipe, path in paths.items() if os.path.exists(path)}
  family = Family(env_id, options, workdir or out_dir, existing)
  for recipe, path in paths.items():
    if recipe in existing:
      report(f"{recipe}: {path} exists, kept")
      continue
    arrays = family.rows(recipe)
    write_dataset(path, arrays, family.metadata(recipe, arrays))
    report(f"{recipe}: wrote {path} ({len(arrays['rewards'])} steps)")
  return paths


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined only when it runs, so importing the module defines none."""
  flags.DEFINE_string("env", "Hopper-v5", "A gymnasium MuJoCo environment id.")
  flags.DEFINE_string(
      "recipe", None, f"A D4RL recipe: {', '.join(RECIPES)}, policy:<checkpoint> or all (every recipe, "
      "--out a folder). Without it, --policy is rolled out.")
  flags.DEFINE_string("policy", "random", f"Without --recipe, the behaviour policy: {', '.join(POLICIES)}.")
  flags.DEFINE_integer("steps", 100_000, "Environment steps to record (per rollout recipe).")
  flags.DEFINE_string("out", None, "The HDF5 file to write (must not exist yet); with --recipe=all, a folder.")
  flags.DEFINE_integer("seed", 0, "Seed of the environment, the policy and the SAC run.")
  flags.DEFINE_string(
      "workdir", None, "Where the SAC run (checkpoints, replay buffer, run.json) lives; default: --out's folder "
      "(--out itself with --recipe=all).")
  flags.DEFINE_float(
      "medium_fraction", RecipeOptions.medium_fraction,
      "The medium policy's return, as a fraction of the way from the random policy's to the expert's.")
  flags.DEFINE_float(
      "expert_return", None, "Take this as the expert's return (ref_max_score, medium threshold) instead of "
      "measuring the SAC expert.")
  flags.DEFINE_integer(
      "reference_episodes", RecipeOptions.reference_episodes,
      "Episodes averaged for the random and the expert policy's reference returns.")
  flags.DEFINE_integer(
      "medium_episodes", RecipeOptions.medium_episodes,
      "0: medium is SAC's first evaluation past the threshold. N > 0: the SAC policies evaluated near the "
      "threshold are evaluated again over N episodes each, and the one nearest it is medium.")
  flags.DEFINE_integer("sac_steps", DEFAULT_SAC.total_steps, "SAC training steps (the expert's budget).")
  flags.DEFINE_string(
      "sac_hidden", ",".join(map(str, DEFAULT_SAC.hidden_dims)), "SAC hidden layer widths, comma-separated.")
  flags.DEFINE_integer(
      "sac_start_steps", DEFAULT_SAC.start_steps, "SAC steps of uniform random actions before updates start.")
  flags.DEFINE_integer(
      "sac_eval_every", DEFAULT_SAC.eval_every, "SAC steps between evaluations (each saves a checkpoint).")
  flags.DEFINE_integer(
      "sac_eval_episodes", DEFAULT_SAC.eval_episodes, "Episodes per SAC evaluation.")
  flags.DEFINE_integer(
      "sac_chunk_steps", DEFAULT_SAC.chunk_steps, "SAC steps collected, then as many updates in one compiled call.")
  flags.DEFINE_string(
      "manifest", None, "Write the manifest (JSON) of the --env family in the folder --out to this path; "
      "collects nothing.")
  flags.DEFINE_string(
      "check", None, "Compare the family in the folder --out with this manifest; collects nothing. Exit status "
      "0 when every file is identical or at the same level, 1 otherwise.")


def parse_widths(text: str) -> tuple[int, ...]:
  try:
    widths = tuple(int(width) for width in text.split(","))
  except ValueError:
    widths = ()
  if not widths or min(widths) < 1:
    raise InputError(f"--sac_hidden: '{text}'; expected positive widths separated by commas, e.g. 256,256")
  return widths


def options_from_flags() -> RecipeOptions:
  return RecipeOptions(
      steps=FLAGS.steps,
      seed=FLAGS.seed,
      sac=dataclasses.replace(
          DEFAULT_SAC, total_steps=FLAGS.sac_steps, hidden_dims=parse_widths(FLAGS.sac_hidden),
          start_steps=FLAGS.sac_start_steps, eval_every=FLAGS.sac_eval_every,
          eval_episodes=FLAGS.sac_eval_episodes, chunk_steps=FLAGS.sac_chunk_steps),
      medium_fraction=FLAGS.medium_fraction,
      expert_return=FLAGS.expert_return,
      reference_episodes=FLAGS.reference_episodes,
      medium_episodes=FLAGS.medium_episodes,
  )


def family_command(env_id: str, options: dict, rollout_rows: Optional[int]) -> str:
  """The command that makes a family again, from the options its files store: the flags that
  differ from their defaults."""
  parts = ["bracplus collect", f"--env={env_id}", "--recipe=all"]
  defaults = RecipeOptions()
  if options.get("seed", defaults.seed) != defaults.seed:
    parts.append(f"--seed={options['seed']}")
  if rollout_rows is not None and rollout_rows != defaults.steps:
    parts.append(f"--steps={rollout_rows}")
  for flag in ("medium_fraction", "medium_episodes"):
    if options.get(flag, getattr(defaults, flag)) != getattr(defaults, flag):
      parts.append(f"--{flag}={options[flag]}")
  sac_config = options.get("sac", {})
  for flag, key in (("sac_steps", "total_steps"), ("sac_start_steps", "start_steps"),
                    ("sac_eval_every", "eval_every"), ("sac_eval_episodes", "eval_episodes"),
                    ("sac_chunk_steps", "chunk_steps")):
    if sac_config.get(key, getattr(DEFAULT_SAC, key)) != getattr(DEFAULT_SAC, key):
      parts.append(f"--{flag}={sac_config[key]}")
  if tuple(sac_config.get("hidden_dims", DEFAULT_SAC.hidden_dims)) != DEFAULT_SAC.hidden_dims:
    parts.append(f"--sac_hidden={','.join(map(str, sac_config['hidden_dims']))}")
  return " ".join(parts + ["--out=DIR"])


def write_family_manifest(env_id: str, folder: str, path: str) -> dict:
  """The manifest of the family in `folder`, with the command that makes it again, written to `path`."""
  manifest = family.build_manifest(env_id, folder)
  random_rows = manifest["files"][family_file_name(env_id, "random")]["rows"]
  manifest["command"] = family_command(env_id, manifest["collector_options"], random_rows)
  family.write_manifest(manifest, path)
  return manifest


def describe_or_check_family() -> None:
  """--manifest or --check: the family in the folder --out described, or compared with a manifest."""
  if FLAGS.manifest and FLAGS.check:
    raise InputError("--manifest, --check: give one of them; --manifest writes a manifest, --check reads one")
  if not os.path.isdir(FLAGS.out):
    raise InputError(f"--out: {FLAGS.out} is not a folder; expected the folder of a family's files")
  if FLAGS.manifest:
    manifest = write_family_manifest(FLAGS.env, FLAGS.out, FLAGS.manifest)
    print("\n".join(family.manifest_table(manifest)))
    print(f"wrote {FLAGS.manifest}")
    return
  lines, all_match = family.check_family(family.read_manifest(FLAGS.check), FLAGS.out)
  print("\n".join(lines))
  if not all_match:
    sys.exit(1)


@exits_cleanly_on_input_errors
def main(argv: list[str]) -> None:
  refuse_arguments(argv)
  if not FLAGS.out:
    raise InputError("--out: missing; expected the path of the HDF5 file to write (a family's folder with "
                     "--recipe=all, --manifest or --check)")
  if FLAGS.manifest or FLAGS.check:
    describe_or_check_family()
    return
  if FLAGS.recipe is None:
    arrays = collect(FLAGS.env, FLAGS.policy, FLAGS.steps, FLAGS.out, FLAGS.seed)
    episodes = int((arrays["terminals"] | arrays["timeouts"]).sum())
    print(f"wrote {FLAGS.out}: {len(arrays['rewards'])} steps, {episodes} episodes; "
          f"inspect it with: bracplus data hdf5:{FLAGS.out}")
    return
  if FLAGS["policy"].present:
    raise InputError("--policy: give either --policy (a plain rollout) or --recipe, not both")
  check_recipe(FLAGS.recipe)
  options = options_from_flags()
  if FLAGS.recipe == "all":
    make_family(FLAGS.env, FLAGS.out, options, FLAGS.workdir, report=print)
    print(f"inspect a file with: bracplus data hdf5:{FLAGS.out}/"
          f"{family_file_name(FLAGS.env, 'medium')}")
    return
  arrays = make_recipe(FLAGS.env, FLAGS.recipe, FLAGS.out, options, FLAGS.workdir)
  episodes = int((arrays["terminals"] | arrays["timeouts"]).sum())
  print(f"wrote {FLAGS.out}: {len(arrays['rewards'])} steps, {episodes} episodes; "
        f"inspect it with: bracplus data hdf5:{FLAGS.out}")


if __name__ == "__main__":
  run_command(sys.modules[__name__])
