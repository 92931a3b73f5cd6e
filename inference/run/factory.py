"""Build the pieces of a run from a :class:`~pyro_base.inference.run.config.MetaConfig`, and reload
them.

One function per arrow of the data flow: config -> search space -> task distribution ->
model + guide -> MetaSVI. ``load_trained`` rebuilds the model from a run directory's
``config.yaml`` and ``checkpoint.pt`` (used by adaptation, ArviZ export and evaluation).

Usage::

    cfg = MetaConfig(steps=10)
    space = build_space(cfg)
    model = build_model(cfg, space, device="cpu")
    guide = build_guide(cfg, model)
    svi = build_meta_svi(cfg, model, guide)
    model, guide, cfg, state = load_trained("runs/x")
    model, guide, cfg, state = load_trained("runs/x", transfer="architecture")  # W_0's weights
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from pyro_base.checkpoint import CheckpointError, load_checkpoint
from pyro_base.cli import EPISODE_SOURCES
from pyro_base.inference.run.config import ConfigError, MetaConfig, parse_mixture_entry
from pyro_base.inference.run.runlog import CHECKPOINT, CONFIG
from pyro_base.inference.vi.arch_refit import ArchRefit
from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_svi import MetaSVI, zero_head
from pyro_base.models.base_model import BASEModel
from pyro_base.models.priors import make_arch_prior, make_weight_prior
from pyro_base.models.relaxations import Concrete, StraightThrough
from pyro_base.models.temperature import make_schedule
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks import get_task_distribution
from pyro_base.tasks.base import TaskDistribution
from pyro_base.tasks.mixture import MixtureTasks
from pyro_base.training import resolve_device  # noqa: F401  (re-exported for the scripts)


def build_space(cfg: MetaConfig) -> SearchSpace:
    overrides = {k: getattr(cfg, k) for k in ("channels", "cells", "nodes")
                 if getattr(cfg, k) is not None}
    if "cells" in overrides:
        overrides["reductions"] = None  # DARTS positions for the new depth
    return SearchSpace.preset(cfg.preset, **overrides)


def build_tasks(cfg: MetaConfig, space: SearchSpace) -> TaskDistribution:
    """The run's task distribution. On-disk sources give ``n_way``-class subsets at the search
    space's image size and channels (grey images made RGB), meta-train / meta-val / meta-test
    from disjoint classes (``holdout="classes"``); a source with fewer classes in a split than
    ``n_way`` is a ConfigError naming both counts."""
    if cfg.mixture:
        parts = [parse_mixture_entry(e) for e in cfg.mixture]
        return MixtureTasks([build_tasks(cfg.replace(task_source=s, data_dir=d, mixture=None),
                                         space) for s, _, d in parts],
                            weights=[w for _, w, _ in parts])
    options: dict[str, Any] = {"image_size": space.input_size, "n_support": cfg.n_support,
                               "n_query": cfg.n_query}
    hi = min(10, space.n_classes)  # tasks never have more classes than the supernet outputs
    if cfg.task_source == "procedural":
        options["n_classes"] = (min(5, hi), hi)
        if cfg.families is not None:
            options["families"] = tuple(cfg.families)
        return get_task_distribution(cfg.task_source, **options)
    if cfg.task_source == "digits":
        options["n_classes"] = min(5, hi)
        return get_task_distribution(cfg.task_source, **options)
    n_way = cfg.n_way or min(5, space.n_classes)
    if n_way > space.n_classes:
        raise ConfigError(f"n_way {n_way} exceeds the {space.n_classes} outputs of preset "
                          f"{cfg.preset!r}")
    # on-disk sources count images per class: n_support / n_query stay images per task
    per_class = {"n_support": max(1, cfg.n_support // n_way),
                 "n_query": max(1, cfg.n_query // n_way)}
    options.update(n_classes=n_way, channels=space.in_channels, **per_class)
    if cfg.task_source not in EPISODE_SOURCES:  # those always hold out classes
        options["holdout"] = cfg.holdout
    if cfg.data_dir is not None:
        options["path" if cfg.task_source == "npz" else "data_dir"] = cfg.data_dir
    dist = get_task_distribution(cfg.task_source, **options)
    splits = dist.splits()  # decodes the data once; a missing or corrupt one fails here
    need = per_class["n_support"] + per_class["n_query"]
    for split in ("train", "test"):
        if len(splits[split]) < n_way:
            raise ConfigError(f"task source {cfg.task_source!r} ({cfg.data_dir}) has "
                              f"{len(splits[split])} {split} classes with "
                              f"holdout={cfg.holdout!r}, fewer than n_way={n_way}")
    for split in ("train", "test"):
        usable = sum(len(i) >= need for i in splits[split].values())
        if usable < n_way:
            raise ConfigError(f"task source {cfg.task_source!r} ({cfg.data_dir}): only {usable} "
                              f"{split} classes have the {need} images per class that "
                              f"n_support={cfg.n_support} + n_query={cfg.n_query} over "
                              f"n_way={n_way} classes need")
    return dist


def build_model(cfg: MetaConfig, space: SearchSpace, *,
                device: torch.device | str = "cpu") -> BASEModel:
    torch.manual_seed(cfg.seed)  # the supernet's initial weights = mu_0
    relaxation = (Concrete(kl=cfg.kl) if cfg.relaxation == "concrete" else StraightThrough())
    model = BASEModel(SuperNet(space), weight_prior=make_weight_prior(cfg.weight_prior,
                                                                      scale=cfg.prior_scale),
                      arch_prior=make_arch_prior(cfg.arch_prior), relaxation=relaxation,
                      beta=cfg.beta, init_scale=cfg.init_scale)
    if cfg.head == "zero":
        zero_head(model)
    return model.to(device)


def build_guide(cfg: MetaConfig, model: BASEModel) -> OptimizationEmbeddingGuide:
    return OptimizationEmbeddingGuide(model, inner_steps=cfg.inner_steps,
                                      inner_lr=cfg.inner_lr,
                                      arch_optimizer=cfg.arch_optimizer, arch_lr=cfg.arch_lr,
                                      weight_posterior=cfg.weight_posterior,
                                      inner_optimizer=cfg.inner_optimizer,
                                      inner_beta1=cfg.inner_beta1,
                                      batch_size=cfg.inner_batch, elbo_impl=cfg.elbo_impl)


def build_meta_svi(cfg: MetaConfig, model: BASEModel,
                   guide: OptimizationEmbeddingGuide) -> MetaSVI:
    schedule = make_schedule(cfg.tau_schedule, start=cfg.tau_start, end=cfg.tau_end,
                             steps=cfg.steps)
    return MetaSVI(model, guide, meta_lr=cfg.meta_lr, meta_lr_final=cfg.meta_lr_final,
                   total_steps=cfg.steps, tasks_per_step=cfg.tasks_per_step, mode=cfg.mode,
                   inner_grad=cfg.inner_grad, temperature=schedule, nan_policy=cfg.nan_policy,
                   max_bad_steps=cfg.max_bad_steps, seed=cfg.seed,
                   batch_tasks=cfg.batch_tasks, meta_head=cfg.head == "learned",
                   arch_decay=cfg.arch_decay, arch_update=cfg.arch_update,
                   weight_scale=cfg.weight_scale, weight_update=cfg.weight_update,
                   workers=meta_workers(cfg, model))


def meta_workers(cfg: MetaConfig, model: BASEModel) -> int:
    """``cfg.meta_workers`` where a meta-step's tasks can be spread over processes (Reptile
    without ``batch_tasks``, on a CPU), else 1."""
    if cfg.mode != "reptile" or cfg.batch_tasks or model.W.mu.device.type != "cpu":
        return 1
    return cfg.meta_workers


TRANSFERS = ("all", "architecture", "weights", "none")


def transfer_state(meta: dict[str, torch.Tensor], initial: dict[str, torch.Tensor], *,
                   transfer: str = "all") -> dict[str, torch.Tensor]:
    """The ``W`` a new task adapts from, as a state dict: what of the meta-trained ``meta`` it
    takes, the rest from the run's initial ``W_0`` (``initial``).

    * ``"all"``: the meta-prior itself;
    * ``"architecture"``: the meta-trained architecture logits ``alpha`` with ``W_0``'s weight
      prior ``(mu, log sigma)``: the architecture prior alone transfers, the weights start
      where meta-training started;
    * ``"weights"``: the meta-trained weight prior with ``W_0``'s (uniform) logits;
    * ``"none"``: ``W_0`` itself, nothing transferred (a fresh start in the run's search space).
    """
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, got {transfer!r}")
    if transfer == "all":
        return dict(meta)
    if transfer == "none":
        return dict(initial)
    keep_alpha = transfer == "architecture"
    return {k: (v if k.startswith("alpha_") == keep_alpha else initial[k])
            for k, v in meta.items()}


def sharpen_architecture(state: dict[str, torch.Tensor], sharpness: float,
                         ) -> dict[str, torch.Tensor]:
    """``state`` with its architecture logits times ``sharpness`` ``g``: the categorical prior
    of every edge raised to the power ``g`` and renormalised,

        p_g(z_e = o) = p(z_e = o)^g / sum_o' p(z_e = o')^g = softmax(g * alpha_e)_o,

    which keeps each edge's op ranking, lowers its entropy for ``g > 1`` and leaves a uniform
    prior uniform. A new task adapts from it (the prior of the ELBO's architecture KL and the
    guide's starting logits alike); meta-training itself never sharpens.
    """
    if not (isinstance(sharpness, int | float) and math.isfinite(sharpness) and sharpness > 0):
        raise ValueError(f"sharpness must be a finite number > 0, got {sharpness!r}")
    return {k: (v * sharpness if k.startswith("alpha_") else v) for k, v in state.items()}


def load_trained(run_dir: str | Path, *, device: torch.device | str = "cpu",
                 transfer: str = "all", sharpness: float | None = None,
                 ) -> tuple[BASEModel, OptimizationEmbeddingGuide, MetaConfig, dict[str, Any]]:
    """Model, guide, config and raw checkpoint state of a run; the model's ``W`` is the start a
    new task adapts from: the checkpoint's ``W``, its architecture logits replaced by the
    checkpoint's ``arch_refit`` where the run refit them
    (:class:`~pyro_base.inference.vi.arch_refit.ArchRefit`), then sharpened.

    :param transfer: what the model's ``W`` takes from the checkpoint (:func:`transfer_state`;
        the rest is the run's ``W_0``, rebuilt from its config and seed).
    :param sharpness: the power of the architecture prior (:func:`sharpen_architecture`);
        ``None``: the run's ``adapt_sharpness``, which the returned config then holds too.
    """
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, got {transfer!r}")
    run_dir = Path(run_dir)
    missing = [n for n in (CONFIG, CHECKPOINT) if not (run_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"run directory {run_dir} lacks {missing}; expected the output "
                                "of scripts/meta_svi.py (config.yaml and checkpoint.pt)")
    cfg = MetaConfig.from_run_file(run_dir / CONFIG)
    space = build_space(cfg)
    state = load_checkpoint(run_dir / CHECKPOINT, space=space, map_location=device)
    model = build_model(cfg, space, device=device)
    initial = {k: v.detach().clone() for k, v in model.W.state_dict().items()}
    try:
        model.W.load_state_dict(state["svi"]["W"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {run_dir / CHECKPOINT} does not hold W for this "
                              f"model: {e}") from e
    if "arch_refit" in state:
        try:
            refit = ArchRefit.from_state(state["arch_refit"])
            model.W.load_state_dict(refit.apply(model.W.state_dict()))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {run_dir / CHECKPOINT}: its arch_refit entry "
                                  f"does not fit this model: {e!r}") from e
    if sharpness is not None:
        cfg = cfg.replace(adapt_sharpness=sharpness)
    start = transfer_state(model.W.state_dict(), initial, transfer=transfer)
    model.W.load_state_dict(sharpen_architecture(start, cfg.adapt_sharpness))
    return model, build_guide(cfg, model), cfg, state
