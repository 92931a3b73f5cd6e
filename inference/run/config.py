"""The configuration of a meta-training run: one validated dataclass, YAML in and out.

Every field is a kebab-case flag of ``pyro-base meta-svi`` (``scripts/meta_svi.py``), with its
help and choices in ``--help``, and a key of ``--config file.yaml`` (flags override the file).
Validation is eager and names the field: unknown keys, wrong types and out-of-range values
(negative learning rates, zero tasks, temperature <= 0) are rejected before anything is built.
The defaults are the measured ones of :mod:`pyro_base.defaults`.

Usage::

    cfg = MetaConfig.from_yaml("run.yaml", steps=50)   # file values, then overrides
    cfg.to_yaml(run_dir / "config.yaml")
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pyro_base import defaults
from pyro_base.cli import TASK_SOURCES
from pyro_base.config import Config, ConfigError, check_float, option, read_settings

__all__ = ["TASK_SOURCES", "ConfigError", "MetaConfig"]

ON_DISK = TASK_SOURCES[2:]

_POSITIVE = {
    "inner_lr",
    "arch_lr",
    "meta_lr",
    "beta",
    "init_scale",
    "prior_scale",
    "tau_start",
    "tau_end",
    "adapt_temperature",
    "adapt_sharpness",
    "collective_timeout",
}
_AT_LEAST_1 = {
    "steps",
    "tasks_per_step",
    "inner_batch",
    "n_support",
    "n_query",
    "n_heldout",
    "max_bad_steps",
    "checkpoint_every",
    "num_samples",
    "posterior_draws",
    "arch_refit_steps",
    "arch_refit_workers",
    "meta_workers",
}
_AT_LEAST_0 = {"inner_steps", "adapt_steps", "seed", "threads", "arch_refit_tasks"}
# timedelta and torch.manual_seed overflow beyond these
_AT_MOST = {"collective_timeout": 7 * 86400, "seed": 2**32 - 1}


# settings added after run directories were first written, with the value a run whose
# config.yaml lacks the key was trained with (not today's default)
RUN_FILE_DEFAULTS = {"arch_update": "reptile", "weight_scale": 1.0, "weight_update": "reptile",
                     "adapt_sharpness": 1.0, "arch_refit_tasks": 0, "inner_beta1": 0.9}


def parse_mixture_entry(entry: str) -> tuple[str, float, str | None]:
    """``SOURCE:WEIGHT[:DATA_DIR]`` -> (source, weight, data dir); a ConfigError names it."""
    parts = str(entry).split(":", 2)
    try:
        weight = float(parts[1])
    except (IndexError, ValueError):
        weight = float("nan")
    if parts[0] not in TASK_SOURCES or not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"mixture entry {entry!r} must be SOURCE:WEIGHT[:DATA_DIR] with SOURCE "
                          f"one of {TASK_SOURCES} and WEIGHT > 0")
    data_dir = parts[2] if len(parts) == 3 and parts[2] else None
    if parts[0] in ON_DISK and data_dir is None and parts[0] not in (
            "fashion_mnist", "mnist", "kmnist", "idx"):
        raise ConfigError(f"mixture entry {entry!r}: source {parts[0]!r} needs a DATA_DIR")
    return parts[0], weight, data_dir


@dataclass(frozen=True, kw_only=True)
class MetaConfig(Config):
    """All settings of the main job (``pyro-base meta-svi``); defaults: the measured ones."""

    # tasks
    task_source: str = option(
        "procedural",
        "task source: the embedded procedural families or digits, or an on-disk data set "
        "(--data-dir) whose class subsets are the tasks",
        choices=TASK_SOURCES,
    )
    data_dir: str | None = option(
        None, "on-disk sources: the data directory (npz: the .npz file); nothing is downloaded"
    )
    n_way: int | None = option(
        None, "on-disk sources: classes per task (default 5; at most the supernet's outputs)"
    )
    mixture: list[str] | None = option(
        None,
        "meta-train on several sources at once: SOURCE:WEIGHT[:DATA_DIR] entries, e.g. "
        "procedural:3 digits:1 npz:1:my.npz (a task's source is drawn by weight; --n-way and "
        "--holdout apply to each on-disk one)",
    )
    holdout: str = option(
        "classes",
        "on-disk sources: meta-train / meta-val / meta-test tasks from disjoint classes, or "
        "from disjoint examples of the same classes",
        choices=("classes", "examples"),
    )
    families: list[str] | None = option(
        None, "procedural families to meta-train on (default: all five); a family listed k "
        "times is drawn k times as often in meta-training and the refit"
    )
    n_support: int = option(96, "support images per task (inner loop)")
    n_query: int = option(96, "query images per task (evaluation / MAML loss)")
    n_heldout: int = option(5, "held-out test tasks to adapt to after meta-training")
    # search space
    preset: str = option("cpu", "search-space preset", choices=("cpu", "darts", "tiny"))
    channels: int | None = option(None, "channels")
    cells: int | None = option(None, "cells")
    nodes: int | None = option(None, "nodes")
    # model
    relaxation: str = option(
        "concrete",
        "relaxed-categorical flavour of the z sites",
        choices=("concrete", "straight_through"),
    )
    kl: str = option(
        "analytic",
        "architecture KL: analytic categorical surrogate or Monte Carlo Concrete density",
        choices=("analytic", "mc"),
    )
    weight_prior: str = option(
        "learned",
        "meta-learned Gaussian N(mu, sigma) or fixed N(0, prior_scale)",
        choices=("learned", "fixed"),
    )
    arch_prior: str = option(
        "learned", "meta-learned Categorical(alpha) or uniform", choices=("learned", "uniform")
    )
    head: str = option(
        "learned",
        "classifier head location: meta-learned, or zero and not meta-learned (labels drawn per "
        "task make its meta-update noise)",
        choices=("learned", "zero"),
    )
    prior_scale: float = option(defaults.PRIOR_SCALE, "prior scale")
    beta: float = option(defaults.BETA, "KL weight (likelihood tempering 1/beta)")
    init_scale: float = option(
        defaults.INIT_SCALE, "initial prior/posterior scale sigma of the weights"
    )
    # guide (inner loop)
    inner_steps: int = option(defaults.INNER_STEPS, "T, inner steps per task during meta-training")
    inner_lr: float = option(defaults.INNER_LR, "inner step size (weights)")
    arch_lr: float | None = option(
        defaults.ARCH_LR,
        "inner step size (architecture logits); null: inner_lr (adam) or 10 x inner_lr (sgd)",
    )
    inner_optimizer: str = option("adam", "inner optimizer", choices=("adam", "sgd"))
    inner_beta1: float = option(
        0.9, "Adam's first-moment decay in the inner loop, in [0, 1); 0: no momentum (the "
        "Reptile paper's inner Adam)")
    arch_optimizer: str | None = option(
        defaults.ARCH_OPTIMIZER,
        "inner optimizer of the architecture logits (null: inner_optimizer); a restarted "
        "Adam's first steps are lr * sign(gradient), so small noisy logit gradients make "
        "full-size steps, SGD keeps their size (the logits' gradients are ~1e-3 per datum: "
        "give sgd an --arch-lr of 30-100, not Adam's 0.3)",
        choices=("adam", "sgd"),
    )
    inner_batch: int = option(defaults.INNER_BATCH, "support minibatch per inner step")
    weight_posterior: str = option("gaussian", "weight posterior", choices=("gaussian", "delta"))
    elbo_impl: str = option(
        "pyro",
        "inner-loop ELBO: Pyro's TraceMeanField_ELBO, the equal Pyro-free one, or that one with "
        "the inner step replayed as a CUDA graph (GPU)",
        choices=("pyro", "functional", "graph"),
    )
    batch_tasks: bool = option(
        False,
        "adapt a step's tasks together in one vmapped inner loop (reptile; elbo_impl functional "
        "or graph)",
    )
    # meta-training
    mode: str = option(
        "reptile",
        "meta-update: reptile (Algorithm 1) or maml (query ELBO through the unroll)",
        choices=("reptile", "maml"),
    )
    inner_grad: str = option(
        "first", "maml only: first- or second-order unroll", choices=("first", "second")
    )
    steps: int = option(defaults.STEPS, "meta-steps")
    tasks_per_step: int = option(defaults.TASKS_PER_STEP, "tasks per step")
    meta_workers: int = option(
        2,
        "processes a meta-step's tasks are adapted in on a CPU (reptile without batch_tasks, "
        "not under torchrun; one torch thread each; 1: in this process), and the held-out "
        "look's tasks after meta-training; with --threads 1 (the default) W and the look do "
        "not depend on it",
    )
    meta_lr: float = option(
        defaults.META_LR, "meta step size lambda (decays linearly to meta_lr * meta_lr_final)"
    )
    arch_decay: float = option(
        defaults.ARCH_DECAY,
        "precision kappa of a Gaussian hyperprior N(0, 1/kappa) on the architecture logits of "
        "W (the meta-step's weight decay on them); 0: none, the prior may collapse onto one op",
    )
    weight_scale: float = option(
        defaults.WEIGHT_SCALE,
        "the meta step of the weights' prior (mu, log sigma) as a fraction of meta_lr (the "
        "architecture logits keep meta_lr)",
    )
    weight_update: str = option(
        defaults.WEIGHT_UPDATE,
        "reptile mode only: the meta-step of the weights' prior; reptile: the tasks' deltas, "
        "query: the gradient of the adapted posteriors' loss on a query batch with respect to "
        "their own (mu, log sigma)",
        choices=("reptile", "query"),
    )
    arch_update: str = option(
        defaults.ARCH_UPDATE,
        "reptile mode only: the meta-step of the architecture logits; mixture moves the prior's "
        "op probabilities toward the tasks' mean adapted op probabilities (the empirical-Bayes "
        "update: it sharpens where tasks agree), reptile moves the logits toward the tasks' "
        "mean adapted logits (their noise is a random walk that can end on one op)",
        choices=("reptile", "mixture"),
    )
    arch_refit_tasks: int = option(
        defaults.ARCH_REFIT_TASKS,
        "after the last meta-step, refit the architecture prior to the mean op probabilities of "
        "this many training tasks, each adapted for arch_refit_steps inner steps from W (one EM "
        "step with a long E-step; the weights stay); 0: no refit",
    )
    arch_refit_steps: int = option(
        defaults.ARCH_REFIT_STEPS, "inner steps per task of the architecture refit's E-step"
    )
    arch_refit_workers: int = option(
        2,
        "processes the architecture refit's tasks are spread over on a CPU (one torch thread "
        "each; 1: in this process); the logits do not depend on it",
    )
    meta_lr_final: float = option(defaults.META_LR_FINAL, "meta lr final")
    tau_schedule: str = option(
        "exponential",
        "temperature schedule over meta-steps",
        choices=("constant", "linear", "exponential"),
    )
    tau_start: float = option(defaults.TAU_START, "tau start")
    tau_end: float = option(defaults.TAU_END, "tau end")
    # adaptation to held-out tasks
    adapt_steps: int = option(defaults.ADAPT_STEPS, "inner steps when adapting to a held-out task")
    adapt_temperature: float = option(defaults.ADAPT_TEMPERATURE, "adapt temperature")
    adapt_sharpness: float = option(
        defaults.ADAPT_SHARPNESS,
        "power g of the architecture prior a new task adapts from, p(z)^g: its logits times g "
        "(1: the meta-trained prior itself; a uniform prior is unchanged)",
    )
    num_samples: int = option(defaults.NUM_SAMPLES, "num samples")
    posterior_draws: int = option(64, "draws per held-out task in posterior.nc (az.loo needs ~64+)")
    # running
    device: str = option("auto", "auto picks CUDA when available", choices=("auto", "cpu", "cuda"))
    threads: int = option(
        1,
        "torch CPU threads per process (0: torch's default); 1 was as fast as 2 on a 2-core "
        "machine and does not slow down when the other core is busy",
    )
    seed: int = option(0, "seed")
    deterministic: bool = option(False, "torch deterministic algorithms (bit-reproducible resume)")
    nan_policy: str = option(
        "stop", "on a NaN/Inf task loss: stop, or skip that task", choices=("stop", "skip")
    )
    max_bad_steps: int = option(3, "max bad steps")
    checkpoint_every: int = option(1, "meta-steps between checkpoints")
    collective_timeout: float = option(300.0, "seconds before a stuck all-reduce fails (torchrun)")

    @classmethod
    def from_run_file(cls, path: str | os.PathLike, **overrides: Any) -> MetaConfig:
        """The ``config.yaml`` of a run directory, then ``overrides``: a setting the file lacks
        (it was written before the setting existed) takes the value that run was trained with
        (:data:`RUN_FILE_DEFAULTS`), so a resumed or evaluated old run keeps its behaviour."""
        settings = {**RUN_FILE_DEFAULTS, **read_settings(path, cls), **overrides}
        return cls.from_dict(settings, source=str(path))

    def validate(self) -> None:
        """Ranges and combinations (types and choices are checked by :class:`Config`)."""
        for name in _POSITIVE:
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        for name in _AT_LEAST_1:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in _AT_LEAST_0:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name, top in _AT_MOST.items():
            if getattr(self, name) > top:
                raise ConfigError(f"{name} must be <= {top}, got {getattr(self, name)!r}")
        for name in ("channels", "cells", "nodes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be >= 1 or null, got {v!r}")
        check_float("inner_beta1", self.inner_beta1, low=0.0, high=1.0)
        if not 0 <= self.meta_lr_final <= 1:
            raise ConfigError(f"meta_lr_final must be in [0, 1], got {self.meta_lr_final!r}")
        if not (math.isfinite(self.arch_decay) and self.arch_decay >= 0):
            raise ConfigError(f"arch_decay must be a finite number >= 0, got {self.arch_decay!r}")
        if not (math.isfinite(self.weight_scale) and self.weight_scale > 0):
            raise ConfigError(f"weight_scale must be a finite number > 0, got "
                              f"{self.weight_scale!r}")
        if self.batch_tasks and (self.mode != "reptile" or self.elbo_impl == "pyro"):
            raise ConfigError(
                f"batch_tasks needs mode 'reptile' and elbo_impl 'functional' or "
                f"'graph', got mode {self.mode!r}, elbo_impl {self.elbo_impl!r}"
            )
        if self.relaxation == "straight_through" and (
            self.elbo_impl == "graph" or self.batch_tasks
        ):
            raise ConfigError(
                "relaxation 'straight_through' computes only the sampled op per "
                "edge, which the static inner loop of elbo_impl 'graph' and "
                "batch_tasks cannot (it computes every op); use elbo_impl "
                "'pyro' or 'functional' without batch_tasks"
            )
        if self.task_source in ON_DISK and self.data_dir is None and self.task_source not in (
                "fashion_mnist", "mnist", "kmnist", "idx"):
            raise ConfigError(f"task_source {self.task_source!r} needs data_dir (nothing is "
                              "downloaded)")
        for entry in self.mixture or []:
            parse_mixture_entry(entry)
        if self.mixture is not None and not self.mixture:
            raise ConfigError("mixture must be null or a non-empty list")
        if self.n_way is not None and self.n_way < 2:
            raise ConfigError(f"n_way must be >= 2 or null, got {self.n_way!r}")
        if self.families is not None and not self.families:
            raise ConfigError("families must be null (all) or a non-empty list")
