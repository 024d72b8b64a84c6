"""Shared fixtures: files written in D4RL's exact HDF5 layout."""

import atexit
import os
import shutil
import tempfile

# Tests compile many small programs: skip LLVM's expensive passes (about 2x faster
# compiles here); the programs' results do not depend on them beyond rounding.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0")
# Many tests build the same programs again (a resumed run, the command-line runs in
# subprocesses): one on-disk compilation cache for the session, shared with subprocesses.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bracplus-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import h5py  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_d4rl_file(path, metadata=None, **arrays):
  """Writes arrays under their keys ('infos/qpos' makes a group), as D4RL's files hold them."""
  with h5py.File(path, "w") as file:
    for key, value in arrays.items():
      file.create_dataset(key, data=value)
    for key, value in (metadata or {}).items():
      file[f"metadata/{key}"] = value
  return str(path)


def episodes_dataset(episode_lengths, ends, obs_dim=3, act_dim=2, seed=0):
  """Rows for episodes of the given lengths; ends[i] is 'terminal', 'timeout' or 'cut'."""
  rng = np.random.default_rng(seed)
  rows = sum(episode_lengths)
  terminals = np.zeros(rows, bool)
  timeouts = np.zeros(rows, bool)
  last = np.cumsum(episode_lengths) - 1
  for index, end in zip(last, ends):
    terminals[index] = end == "terminal"
    timeouts[index] = end == "timeout"
  return dict(
      observations=rng.normal(size=(rows, obs_dim)).astype(np.float32),
      actions=rng.uniform(-1, 1, size=(rows, act_dim)).astype(np.float32),
      rewards=rng.normal(size=rows).astype(np.float32),
      terminals=terminals,
      timeouts=timeouts,
  )


@pytest.fixture
def d4rl_file(tmp_path):
  def make(name="data.hdf5", metadata=None, **arrays):
    return write_d4rl_file(tmp_path / name, metadata=metadata, **arrays)
  return make


@pytest.fixture
def float64():
  """Double precision for finite-difference checks, restored afterwards."""
  previous = jax.config.read("jax_enable_x64")
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


# ---------------------------------------------------------------------------
# The fast subset: `python -m pytest -m "not slow"` leaves out what trains networks, makes
# datasets with SAC, or runs whole commands; `python -m pytest` runs everything.
# ---------------------------------------------------------------------------

# Modules whose every test trains or runs a command end to end.
SLOW_MODULES = {"test_experiment", "test_resume", "test_learner", "test_recipes", "test_alpha",
                "test_learner_options", "test_bad_input"}
# Fixtures that train (an ablation, the evidence command, a SAC family, the toys), make a run's
# data or compile an ensemble's programs; a test using one is slow, wherever it is.
SLOW_FIXTURES = {"ablation", "figures", "evidence_run", "family", "regression_toys", "divergences",
                 "hopper_file", "uninterrupted", "ensemble_problem", "combined_run"}
# Single tests as "<module>::<name>" (every parameter): each took 1.5 s or more on 2 busy cores
# (pytest --durations), most of it compiling, or starting a command in a new process.
SLOW_TESTS = {
    "test_ablate_report::test_unknown_variant_is_one_line_before_anything_runs",
    "test_cli::test_a_command_needing_a_missing_extra_says_which_pip_command",
    "test_cli::test_the_evidence_default_config_loads_from_any_folder",
    "test_cli::test_train_takes_a_packaged_name_from_any_folder",
    "test_collect::test_bad_arguments_get_one_line",
    "test_distributions::test_sample_tanh_gaussian_is_reparameterised",
    "test_docs::test_the_site_builds_in_strict_mode",
    "test_envs::test_a_run_evaluates_in_a_gym_env",
    "test_evaluation::test_best_of_q_evaluation_runs_every_episode",
    "test_evaluation::test_best_of_q_takes_the_argmax_of_the_mean_q_over_clipped_samples",
    "test_evaluation::test_record_episode_writes_the_first_episode",
    "test_evidence::test_criteria_of_good_data",
    "test_evidence::test_criteria_of_mixed_data",
    "test_evidence::test_interval_estimates_of_known_scores",
    "test_family::test_a_bad_manifest_is_one_line",
    "test_family::test_other_versions_and_cpu_are_named",
    "test_family::test_perturbed_deleted_and_missing_files",
    "test_family::test_the_command_writes_the_manifest",
    "test_family::test_the_readme_table_comes_from_the_manifest",
    "test_family::test_the_same_family_is_identical",
    "test_layout::test_a_short_command_name_runs_its_command",
    "test_losses::test_action_gradients_match_finite_differences",
    "test_losses::test_actor_loss_value_and_gradient_signs",
    "test_losses::test_behavior_loss_sums_the_members_negative_elbo",
    "test_losses::test_critic_loss_is_the_td_error_plus_the_penalty",
    "test_losses::test_elbo_falls_short_of_the_log_likelihood_by_the_posterior_kl",
    "test_losses::test_global_alpha_step_follows_the_mean_violation",
    "test_losses::test_gradient_penalty_matches_finite_differences",
    "test_losses::test_gradient_penalty_parameter_gradient_matches_finite_differences",
    "test_losses::test_kl_bound_is_zero_when_the_policy_is_the_behaviour_policy",
    "test_losses::test_kl_bound_matches_its_integral_and_bounds_the_true_kl",
    "test_losses::test_kl_bound_tightens_as_the_encoder_approaches_the_posterior",
    "test_losses::test_mmd_laplacian_matches_numpy",
    "test_losses::test_released_behavior_samples_match_a_direct_decode_call",
    "test_losses::test_stacked_latent_draws_equal_the_broadcast_ones_and_so_do_their_gradients",
    "test_malformed_files::test_a_text_reference_score_is_one_line_from_the_command",
    "test_malformed_files::test_d4rl_layout_files_with_defects",
    "test_malformed_files::test_every_d4rl_layout_defect_alone",
    "test_malformed_files::test_every_minari_defect_alone",
    "test_malformed_files::test_minari_datasets_with_defects",
    "test_malformed_files::test_string_rewards_are_one_line_from_the_command",
    "test_malformed_files::test_text_rewards_in_a_minari_dataset_are_one_line_from_the_command",
    "test_monte_carlo::test_the_critic_fit_compares_the_pessimistic_q_with_the_returns",
    "test_monte_carlo::test_the_critic_fit_of_constant_returns_reports_no_correlation",
    "test_networks::test_a_behaviour_step_writes_out_no_transposed_hidden_weight",
    "test_networks::test_bfloat16_networks_keep_float32_parameters_and_track_float32_to_bfloat16_precision",
    "test_networks::test_bfloat16_steps_take_nearly_all_their_matmul_flops_in_bfloat16",
    "test_networks::test_concat_dense_multiplies_a_shared_part_once_per_state",
    "test_networks::test_layer_matmul_gradients_equal_jax_s_own_dot_rule_to_float32_rounding",
    "test_networks::test_member_assignment_deals_every_row_to_exactly_one_member",
    "test_networks::test_single_member_evaluation_matches_the_all_members_evaluation",
    "test_networks::test_state_alpha_is_positive_and_global_alpha_starts_at_its_initial_value",
    "test_networks::test_the_min_over_q_heads_of_narrow_hidden_layers_has_finite_action_gradients",
    "test_networks::test_twin_critic_heads_are_two_independent_mlps",
    "test_networks::test_vae_member_matches_a_numpy_encoder_and_decoder",
    "test_random_bits::test_flat_normals_are_jax_s_normals_of_that_shape",
    "test_random_bits::test_unrolled_draws_equal_the_rolled_lowering_s_bit_for_bit",
    "test_sac::test_actor_loss_against_numpy",
    "test_sac::test_sac_learns_inverted_pendulum",
    "test_sac::test_update_moves_the_target_by_polyak_and_every_network",
    "test_sweep::test_a_sweep_over_a_shape_changing_field_is_refused_with_one_line_before_compiling",
    "test_toys::test_command_refuses_to_overwrite_in_one_line",
    "test_toys::test_make_figures_writes_two_pngs_and_then_refuses",
}


def is_slow(item) -> bool:
  module = item.path.stem
  name = f"{module}::{item.originalname if hasattr(item, 'originalname') else item.name}"
  if module == "test_collect" and "hopper_file" in item.fixturenames:
    return False  # 400 random steps there, not a training run
  return (module in SLOW_MODULES or name in SLOW_TESTS
          or bool(SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))))


def pytest_collection_modifyitems(config, items):
  for item in items:
    if is_slow(item) and "slow" not in item.keywords:
      item.add_marker(pytest.mark.slow)
