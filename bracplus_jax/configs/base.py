"""Every default of a BRAC+ run: the paper's, with the released code's choices as options.

Task files (e.g. configs/hopper_mixed.py) start from `get_config()` here and
override what differs. Any field can be set on the command line:
`--config.batch_size=100`, `--config.algo.divergence=mmd`.
"""

import ml_collections

from bracplus_jax.sweep import sweep_template


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "brac_plus"  # the task's name: run directories and W&B groups use it
  # brac_plus | bc: behaviour cloning of the dataset's actions with the same policy network,
  # data, schedule of epochs and evaluation (the baseline BRAC+ must beat); BC skips the
  # start-up phases and trains at algo.policy_init_lr.
  config.method = "brac_plus"

  # What to train on and where to evaluate.
  config.dataset = "d4rl:hopper-medium-replay-v2"  # d4rl:<name>, minari:<id> or hdf5:<path>
  config.env = "Hopper-v5"  # a gymnasium id
  config.scale_rewards = True  # into [0, 1] over the dataset (App. F)
  config.clip_actions = False  # refuse actions outside [-1, 1] unless set
  # For an hdf5: dataset that does not exist yet: collect it first with this recipe
  # ('' = never; see `python -m bracplus_jax.collect`).
  config.make_dataset = ml_collections.ConfigDict({"recipe": "", "steps": 100_000, "seed": 0})

  # Seeds: `num_seeds` runs share one process as a vmapped axis, seeds seed..seed+n-1.
  config.seed = 0
  config.num_seeds = 1

  # Schedule (Alg. 1): three start-up phases, then epochs of RL updates.
  config.batch_size = 256
  config.behavior_steps = 400_000  # behaviour VAE pre-training (paper: 400k)
  config.policy_init_steps = 100_000  # initial policy: argmin KL(pi || pi_b)
  config.critic_init_steps = 100_000  # initial critic: evaluation of that policy
  config.epochs = 500
  config.steps_per_epoch = 2_000  # paper, Fig. 2: 2,000 gradient steps per epoch

  config.algo = algorithm_config()

  # Evaluation, in gymnasium: every seed's policy, all episodes stepped together.
  config.eval_episodes = 10  # per seed; 0 turns evaluation off
  config.eval_every = 10  # epochs (and always after the last)
  config.eval_mode = "deterministic"  # tanh(mean) (paper) | best_of_q (released code)

  config.checkpoint_every = 10  # epochs; also after each start-up phase and at the end
  # Inside a unit of steps (a start-up phase, a long epoch): a checkpoint every this many
  # compiled blocks, so a stopped run resumes mid-phase (400k behaviour steps: every 50k).
  config.checkpoint_every_blocks = 50
  config.block_steps = 1_000  # steps per compiled block: progress bar, checkpoint granularity

  config.wandb = ml_collections.ConfigDict()
  config.wandb.mode = "auto"  # online | offline | disabled | auto: online if logged in, else disabled
  config.wandb.project = "bracplus-jax"
  config.wandb.entity = ""  # your W&B team or user; '' = W&B's default
  config.wandb.group = ""  # '' = the task's name, so a task's seeds and runs sit together
  config.wandb.name = ""  # '' = <name>-seeds<first>-<last>
  config.wandb.run_id = ""  # set to continue a W&B run when resuming

  # Hyper-parameter sweeps in one compiled program: --config.sweep.algo.kl_margin="(0.5,1,3)"
  # trains every point of the grid (the product of the swept fields' values) x num_seeds as
  # one vmapped axis. Every field has an entry; () = not swept (bracplus_jax/sweep.py says
  # which fields can be swept).
  config.sweep = sweep_template(config)
  return config


def algorithm_config() -> ml_collections.ConfigDict:
  algo = ml_collections.ConfigDict()

  # Networks (App. F). Released code: 2 x 256 everywhere, scale "released".
  algo.policy_hidden_dims = (512, 512, 512)
  algo.policy_scale = "paper"  # paper: clipped log-std | released: softplus(clip(raw, -10, 5))
  algo.critic_hidden_dims = (256, 256, 256)
  algo.behavior_hidden_dims = (512, 512, 512)
  algo.behavior_ensemble_size = 3
  algo.behavior_latent_dim = 0  # 0: twice the action dim (App. F)
  algo.alpha_hidden_dims = (256, 256, 256)
  # float32 | bfloat16: the policy's, critics' and behaviour model's matmul operands rounded
  # to bfloat16 (forward, and backward to each layer's input), products summed in float32;
  # weight gradients, alpha(s), parameters and optimiser states float32. Several times
  # faster products on CPUs with AMX and on GPUs, at bfloat16's precision (README).
  algo.matmul_dtype = "float32"

  # Optimisers.
  algo.behavior_lr = 1e-3
  algo.policy_init_lr = 1e-3
  algo.critic_lr = 3e-4
  algo.policy_lr = 5e-6
  algo.alpha_lr = 1e-3  # Adam on the global alpha (released); alpha(s) uses alpha_dual_step
  algo.entropy_lr = 1e-3
  # Behaviour VAE and initial policy rates: constant | released: x1, .5, .1, .05, .01 of the
  # rate over fifths of behavior_steps resp. policy_init_steps (the VAEs stay at .01 in RL).
  # constant ended both phases better in benchmarks/startup_schedule.py (README).
  algo.startup_lr_schedule = "constant"
  algo.gamma = 0.99
  algo.tau = 5e-3  # Polyak rate of the target critic (released: 1e-3)

  # The divergence regulariser (Sec. 3.1).
  algo.divergence = "kl"  # kl: analytical upper bound (Eq. 7) | mmd: Laplacian-kernel MMD
  algo.kl_latent_samples = 5  # L (App. F)
  # paper: one random member per state (random_per_state, or random_per_batch) | all: released
  algo.kl_ensemble = "random_per_state"
  algo.kl_policy_samples = 1  # released code: 5
  algo.mmd_sigma = 120.0  # Laplacian kernel width (the paper's and released code's Adroit value)
  algo.mmd_samples = 5
  # root: sqrt(MMD^2 + 1e-6), the released code's, the scale its 0.001 mmd_margin was tuned
  # on: from MMD^2 = 1e-3 it allows +6% of MMD^2, on MMD^2 itself +100% | squared: MMD^2
  algo.mmd_scale = "root"
  # sampled: z ~ N(0, I), u ~ p(u|s,z) | released: z clipped to +-0.5, u = the decoder's mean
  algo.mmd_behavior_samples = "sampled"

  # State-wise Lagrange multiplier alpha(s) (Sec. 3.2).
  algo.alpha = "state"  # state: alpha(s) network (paper) | global: one scalar (released)
  algo.alpha_init = 10.0  # alpha's start, in every state (released code's global alpha: 10)
  # alpha(s)'s dual step (Alg. 1 line 8), `learner.alpha_dual`:
  # kernel: log alpha(s) of each batch state moves to its own target (a damped Gauss-Newton
  # step of the alpha(s) network) | line_search: one gradient step, which moves every state
  # by about the batch's mean change | paper: Alg. 1 line 8 as written, the dual gradient
  # of E[alpha(s) (KL(s) - eps_KL)] on a softplus head by alpha_paper_optimizer at alpha_lr,
  # no bounds beyond alpha > 0 (docs/algorithm.md shows what it does on Hopper data).
  algo.alpha_dual_fit = "kernel"
  algo.alpha_paper_optimizer = "adam"  # adam | sgd, for alpha_dual_fit = "paper"
  # kernel and line_search step in log space: log alpha(s) moves by alpha_dual_step x v(s),
  # v the violation below, and stays in [alpha_min, alpha_max].
  algo.alpha_dual_step = 1e-3
  # relative: v = clip((KL(s) - eps_KL) / eps_KL, -1, m), linear in KL(s) as line 8 is, so
  # where the network cannot tell states apart their alpha(s) settles where their mean KL is
  # eps_KL | log: v = clip(log(KL(s) / eps_KL), -m, m), symmetric around eps_KL, but such
  # states settle where their geometric mean KL is eps_KL, their mean above it: on Hopper
  # mixed it left 25-34% of the states above 1.2 eps_KL at 30k updates, and 1.3-1.4 eps_KL
  # in one run of the one-step tests at N / B = 16 (docs/algorithm.md). m = alpha_dual_max_violation.
  algo.alpha_dual_violation = "relative"
  algo.alpha_dual_max_violation = 10.0
  # Each state's own part of alpha(s): the part all states share moves at every update, a
  # state's own part only when a batch reaches it or states the network does not tell apart
  # from it.
  # rows: one log alpha offset per dataset row, stepped by alpha_dual_row_step x v(s) each
  # time a batch draws the row, on top of the network's plain step (a table of alphas for
  # the data's own states; the actor steps at a state once per draw too, so the step needs
  # no N / B) | leverage: the departure from the batch's mean violation scaled by g(s) from
  # the ridge leverage of the batch's centred tangent kernel, between 1 and N / B:
  # learner.leverage_state_gain | constant: g = alpha_dual_state_gain for every state (runs
  # refuse a gain above N / B; 1 is the plain step).
  algo.alpha_dual_gain = "rows"
  algo.alpha_dual_row_step = 0.3
  algo.alpha_dual_state_gain = 1.0
  algo.alpha_dual_damping = 0.01  # the Gauss-Newton step's ridge, relative to J J^T's mean eigenvalue
  algo.alpha_min = 1e-3
  algo.alpha_max = 1e4  # the released code's cap on its global alpha
  algo.kl_margin = 0.2  # eps_KL = initial policy's mean KL over the dataset + this margin
  algo.mmd_margin = 0.001  # the same with divergence = "mmd" (released code's Adroit value)

  # Gradient penalty (Sec. 3.3, Eq. 10).
  algo.gp_weighting = "hard"  # hard: Heaviside (paper) | soft: released gym default | off
  algo.gp_lambda = 0.1
  algo.gp_lagrange = False  # released: lambda is a Lagrange variable (initial and min 0.1)
  algo.gp_max_ood_grad_norm = 0.01  # target of that Lagrange variable
  algo.gp_lagrange_lr = 1e-3
  algo.gp_threshold = "dataset"  # dataset: mean + std of KL over all states (paper) | batch

  # Critic target.
  algo.td_backup = "expected"  # expected: E_{a'~pi} min_j Q'_j (paper) | max: released
  algo.td_max_samples = 5

  # Entropy constraint (App. F): max: H(pi) <= H0 (paper, gym) | min: H(pi) >= H0 (the
  # paper's Adroit table, the released MMD code: +beta log pi in the actor).
  algo.entropy_constraint = "max"
  # None: the released code's rule, behaviour NLL - act_dim * ln 4 for max, the behaviour
  # NLL itself for min.
  algo.target_entropy = None
  algo.target_entropy_offset = 0.0  # added to the None rule's H0 (a sweepable shift of it)
  algo.entropy_init = 1.0  # initial beta

  # Released code: the behaviour VAEs keep taking one step per RL update.
  algo.behavior_steps_during_rl = False
  return algo


def use_released_code_choices(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The authors' released code's gym defaults, where they differ from the paper (docs/paper.md)."""
  algo = config.algo
  config.batch_size = 100
  algo.policy_hidden_dims = (256, 256)
  algo.critic_hidden_dims = (256, 256)
  algo.behavior_hidden_dims = (256, 256)
  algo.policy_scale = "released"
  algo.kl_ensemble = "all"
  algo.kl_policy_samples = 5
  algo.alpha = "global"
  algo.gp_weighting = "soft"
  algo.gp_lagrange = True
  algo.gp_threshold = "batch"
  algo.td_backup = "max"
  algo.tau = 1e-3
  algo.behavior_steps_during_rl = True
  return config


# Per-task settings of the released code (docs/paper.md): the margin added to the initial
# policy's KL to make eps_KL, and the gradient penalty's target OOD gradient norm.
KL_MARGINS = {"random": 3.0, "medium": None, "medium_expert": 0.2, "mixed": 3.0}
MEDIUM_KL_MARGINS = {"hopper": 0.2, "walker2d": 1.0, "halfcheetah": 7.0}
GYMNASIUM_IDS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
D4RL_KINDS = {"random": "random", "medium": "medium", "medium_expert": "medium-expert",
              "mixed": "medium-replay"}


def gym_task(env: str, kind: str) -> ml_collections.ConfigDict:
  """A D4RL locomotion task, e.g. gym_task("hopper", "mixed") = d4rl:hopper-medium-replay-v2."""
  config = get_config()
  config.name = f"{env}_{kind}"
  config.dataset = f"d4rl:{env}-{D4RL_KINDS[kind]}-v2"
  config.env = GYMNASIUM_IDS[env]
  margin = KL_MARGINS[kind]
  config.algo.kl_margin = MEDIUM_KL_MARGINS[env] if margin is None else margin
  config.algo.gp_max_ood_grad_norm = 0.1 if env == "halfcheetah" else 0.01
  return config


def adroit_task(env: str) -> ml_collections.ConfigDict:
  """An Adroit human-demonstration task: MMD regularisation, as the paper uses for Adroit."""
  config = get_config()
  config.name = f"{env}_human"
  config.dataset = f"d4rl:{env}-human-v1"
  config.env = f"AdroitHand{env.capitalize()}-v1"  # needs gymnasium-robotics
  config.algo.divergence = "mmd"
  config.algo.mmd_sigma = 120.0
  config.algo.mmd_margin = 0.001
  config.algo.policy_lr = 5e-8
  config.algo.gp_weighting = "hard"
  config.algo.gp_max_ood_grad_norm = 0.005
  config.algo.entropy_constraint = "min"  # the paper's Adroit table: "Minimum entropy H0"
  return config
