"""The measured defaults of pyro-base, in one place.

Every constructor of the library (:class:`~pyro_base.models.base_model.BASEModel`, the
optimization-embedding guide, :class:`~pyro_base.inference.vi.meta_svi.MetaSVI`,
:func:`~pyro_base.inference.vi.adapt.adapt`) and the main job's configuration
(:class:`~pyro_base.inference.run.config.MetaConfig`) take their defaults from here, so a model
built by hand behaves like the main job's. The README's "Does meta-training learn?" section
gives the default pipeline's paired held-out gains over the untrained start, and
``docs/meta_learning.md`` the measurement behind each default.

Usage::

    from pyro_base import defaults
    model = BASEModel(SuperNet(space), beta=defaults.BETA)    # the same as BASEModel(...)
"""

# the model: KL weight (likelihood tempering 1/BETA), the weights' initial scale sigma, the fixed
# weight prior's scale
BETA = 1e-3
INIT_SCALE = 0.03
PRIOR_SCALE = 0.1

# the guide's inner loop: T, the weights' Adam step, the architecture logits' rule (None: the
# weights') and step, the support minibatch
INNER_STEPS = 5
INNER_LR = 0.03
ARCH_OPTIMIZER = None
ARCH_LR = 0.3
INNER_BATCH = 32

# meta-training: Reptile's step size, decaying linearly to META_LR * META_LR_FINAL; tasks per
# meta-step; the precision of the Gaussian hyperprior on the architecture logits and their
# meta-step rule ("reptile": mean logits, "mixture": mean op probabilities); the weights' meta
# step as a fraction of META_LR and its rule ("reptile": the tasks' deltas, "query": their
# query gradients); the Concrete temperature, annealed exponentially
# TAU_START -> TAU_END
STEPS = 100
META_LR = 1.0
META_LR_FINAL = 0.1
TASKS_PER_STEP = 4
ARCH_DECAY = 0.0
ARCH_UPDATE = "mixture"
WEIGHT_SCALE = 1.0
WEIGHT_UPDATE = "reptile"
# after meta-training: the architecture prior refit once to the mean op probabilities of
# ARCH_REFIT_TASKS training tasks adapted for ARCH_REFIT_STEPS inner steps each (0 tasks: none);
# with W_0's weights the refit logits are the start that keeps relation from losing (below)
ARCH_REFIT_TASKS = 20
ARCH_REFIT_STEPS = 40
TAU_START = 1.0
TAU_END = 0.5

# adaptation to a new task
ADAPT_STEPS = 20
ADAPT_TEMPERATURE = 0.5
ADAPT_SHARPNESS = 4.0  # the architecture prior's power p(z)^g at adaptation
# where a new task starts: "ensemble" adapts every start of ENSEMBLE_FROM (the whole
# meta-prior, its architecture prior with the run's initial weights W_0, and W_0 itself) on the
# whole support set and averages their posteriors (docs/meta_learning.md, "Averaging the
# starts"); "select", the default before, chooses per task, by SELECT_CRITERION on a held-out
# quarter of its support set, between the starts SELECT_FROM, the first kept on a tie
ADAPT_TRANSFER = "ensemble"
ENSEMBLE_FROM = ("all", "architecture", "none")
SELECT_FROM = ("all", "architecture")
SELECT_CRITERION = "loglik"
NUM_SAMPLES = 4
