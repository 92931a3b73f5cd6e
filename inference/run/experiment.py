"""The meta-prior vs. search-from-scratch experiment: configuration and pieces.

One run meta-trains BASE (:mod:`pyro_base.inference.vi.meta_svi`) on training tasks, then for every
held-out
target obtains a genotype from each method of :data:`METHODS` and records its search cost:

* ``base_adapt``: ``S`` inner steps of the optimization-embedding guide from the meta-prior
  (``S = search_steps``); cost = those steps (meta-training is reported apart, and amortised
  over the targets in the report);
* ``base_prior``: the genotype of ``alpha`` itself (zero adaptation, zero search cost);
* ``darts``, ``snas``, ``random``: :func:`pyro_base.inference.search.methods.run_search` from
scratch on the same
  search space with the same budget of ``S`` supernet forward-backward passes (first-order
  DARTS takes two passes per step, so ``S // 2`` steps); ``darts_10x``: ten times that;
* ``DARTS_V2``, ``BASE_CIFAR``, ``BASE_IMAGENET``: published cells, not searched here.

Images processed count every image through the supernet, inner steps included.

Usage::

    cfg = ExperimentConfig.preset("cpu", seeds=3)
    meta = meta_train(cfg)                      # model, guide, seconds, images
    for target in build_targets(cfg):
        for found in search_genotypes(cfg, meta, target):
            train_genotype(found.genotype, target.task, cfg.train_config(seed=0))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyro_base.config import Config, ConfigError, check_float, check_int
from pyro_base.genotype import Genotype, get_genotype
from pyro_base.inference.evaluate.train_config import TrainConfig
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import build_space
from pyro_base.inference.run.job import meta_train_run
from pyro_base.inference.search.config import SearchConfig
from pyro_base.inference.search.methods import run_search
from pyro_base.inference.vi.adapt import adapt
from pyro_base.inference.vi.guides import AdaptedPosterior, OptimizationEmbeddingGuide
from pyro_base.models.base_model import BASEModel
from pyro_base.search_space import SearchSpace
from pyro_base.tasks import get_task_distribution
from pyro_base.tasks._disk import MissingDataError
from pyro_base.tasks.base import Task
from pyro_base.tasks.mixture import MixtureTasks
from pyro_base.tasks.procedural import FAMILIES

log = logging.getLogger(__name__)

PUBLISHED = ("DARTS_V2", "BASE_CIFAR", "BASE_IMAGENET")
METHODS = ("base_adapt", "base_prior", "darts", "darts_10x", "snas", "random", *PUBLISHED)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_TARGETS = ("cifar10", "imagenet_ds")
SPACES = ("tiny", "cpu", "darts")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig(Config):
    """Budgets of one experiment run; :meth:`preset` gives the smoke / cpu / gpu sizes."""

    space: str = "cpu"                  # search-space preset of BASE and every baseline
    meta_steps: int = 60                # meta-steps of Algorithm 1
    tasks_per_step: int = 4
    inner_steps: int = 5                # T during meta-training
    arch_refit_tasks: int = 0           # the main job's architecture refit (0: none, as the
    #                                     recorded results were measured)
    meta_support: int = 96              # support / query images of a meta-training task
    meta_query: int = 96
    meta_digits: bool = True            # meta-train on digits tasks too (train-split digits)
    search_steps: int = 16              # S: BASE adaptation steps = baseline passes
    search_batch: int = 32
    darts_multiplier: int = 10
    random_candidates: int = 4
    adapt_temperature: float = 0.5      # = the main job's tau floor
    num_samples: int = 2                # predictive draws for the supernet's query accuracy
    target_support: int = 200           # train / test images of a held-out target
    target_query: int = 200
    targets: tuple[str, ...] | None = None   # None: every target available
    train_epochs: int = 6
    train_batch: int = 32
    train_channels: int = 8
    train_layers: int = 3
    seeds: int = 3
    imagenet_batches: tuple[int, ...] = (1,)
    device: str = "cpu"
    seed: int = 0

    def validate(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"space must be one of {SPACES}, got {self.space!r}")
        for name in ("meta_steps", "tasks_per_step", "meta_support", "meta_query",
                     "search_steps", "search_batch", "darts_multiplier", "random_candidates",
                     "num_samples", "target_support", "target_query", "train_epochs",
                     "train_batch", "train_channels", "train_layers", "seeds"):
            check_int(name, getattr(self, name), low=1)
        for name in ("inner_steps", "seed", "arch_refit_tasks"):
            check_int(name, getattr(self, name), low=0)
        check_float("adapt_temperature", self.adapt_temperature, low=0.0, strict=True)
        if self.search_steps < 2:
            raise ConfigError(f"search_steps must be >= 2 (DARTS takes 2 passes a step), got "
                             f"{self.search_steps}")
        if self.targets is not None and not self.targets:
            raise ConfigError("targets must be None (all) or a non-empty tuple of names")
        if not isinstance(self.meta_digits, bool):
            raise ConfigError(f"meta_digits must be a bool, got {self.meta_digits!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ExperimentConfig:
        """``smoke`` (tiny space, 2 targets, 1 seed: ~20 s), ``cpu`` (cpu space, S=16, 3 seeds,
        7 targets: 10.6 min measured on 2 cores, docs/results.md), ``gpu`` (DARTS space at
        32x32, S=16 at batch 64; estimated ~15 min on an H200 for the 7 built-in targets from
        a measured 0.35 s per eager DARTS supernet step at batch 64, not run here);
        ``overrides`` replace fields."""
        presets: dict[str, dict[str, Any]] = {
            "smoke": dict(space="tiny", meta_steps=1, tasks_per_step=2, inner_steps=1,
                          meta_support=16, meta_query=16, meta_digits=False, search_steps=2,
                          search_batch=8, random_candidates=2, num_samples=1,
                          target_support=40, target_query=40, targets=("motif", "digits"),
                          train_epochs=1, train_batch=20, train_channels=4, train_layers=2,
                          seeds=1),
            "cpu": {},
            "gpu": dict(space="darts", meta_steps=20, tasks_per_step=4, inner_steps=3,
                        meta_support=128, meta_query=128, search_steps=16, search_batch=64,
                        random_candidates=4, num_samples=4, target_support=500,
                        target_query=500, train_epochs=10, train_batch=64, train_channels=16,
                        train_layers=8, seeds=3, imagenet_batches=(1, 2), device="auto"),
        }
        if name not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}, got {name!r}")
        return cls(**{**presets[name], **overrides})

    # -- the engine's configs ---------------------------------------------------------------
    def meta_config(self) -> MetaConfig:
        return MetaConfig(preset=self.space, steps=self.meta_steps,
                          tasks_per_step=self.tasks_per_step, inner_steps=self.inner_steps,
                          n_support=self.meta_support, n_query=self.meta_query,
                          inner_batch=self.search_batch, adapt_steps=self.search_steps,
                          adapt_temperature=self.adapt_temperature,
                          num_samples=self.num_samples, device=self.device, seed=self.seed,
                          arch_refit_tasks=self.arch_refit_tasks,
                          threads=0)  # the experiment keeps the process's thread count

    def search_config(self, method: str) -> SearchConfig:
        steps = {"darts": self.search_steps // 2,
                 "darts_10x": self.darts_multiplier * self.search_steps // 2}
        return SearchConfig(space=self.space, steps=steps.get(method, self.search_steps),
                            batch_size=self.search_batch, seed=self.seed, device=self.device,
                            n_candidates=self.random_candidates, tau_end=self.adapt_temperature)

    def train_config(self, *, seed: int) -> TrainConfig:
        return TrainConfig.preset("cpu", epochs=self.train_epochs, batch_size=self.train_batch,
                                  init_channels=self.train_channels, layers=self.train_layers,
                                  seed=seed, device=self.device)


@dataclass
class MetaTrained:
    """The meta-trained model and guide, with what meta-training cost."""

    model: BASEModel
    guide: OptimizationEmbeddingGuide
    space: SearchSpace
    seconds: float
    images: int
    losses: list[float] = field(default_factory=list)


@dataclass
class Target:
    key: str
    family: str
    task: Task


@dataclass
class Found:
    """A method's genotype on a target and its search cost (``published``: not searched)."""

    method: str
    genotype: Genotype
    seconds: float
    images: int
    passes: int
    extra: dict[str, Any] = field(default_factory=dict)
    posterior: AdaptedPosterior | None = None


def _procedural(cfg: ExperimentConfig, space: SearchSpace, n_support: int, n_query: int) -> Any:
    return get_task_distribution("procedural", image_size=space.input_size, n_support=n_support,
                                 n_query=n_query, n_classes=(min(5, space.n_classes),
                                                             min(10, space.n_classes)))


def _digits(space: SearchSpace, n_support: int, n_query: int) -> Any:
    """Digits tasks: train tasks use digits 0-4, held-out (val/test) tasks digits 5-9."""
    return get_task_distribution("digits", image_size=space.input_size, n_support=n_support,
                                 n_query=n_query, n_classes=5, holdout_classes=5)


def meta_train(cfg: ExperimentConfig, *, progress: bool = False,
               run_dir: str | Path | None = None) -> MetaTrained:
    """Meta-train ``W`` with :func:`~pyro_base.inference.run.job.meta_train_run` (the main
    job's orchestration: memory check, checkpoints and metrics in ``run_dir`` when given).

    Images = meta-steps x tasks x (T inner minibatches + the query set scored for the log).
    """
    mcfg = cfg.meta_config()
    space = build_space(mcfg)
    sources = [_procedural(cfg, space, cfg.meta_support, cfg.meta_query)]
    weights = [float(len(FAMILIES))]
    if cfg.meta_digits:
        sources.append(_digits(space, cfg.meta_support, cfg.meta_query))
        weights.append(1.0)
    result = meta_train_run(mcfg, MixtureTasks(sources, weights=weights), run_dir=run_dir,
                            progress=progress,
                            log_level=logging.getLogger().getEffectiveLevel())
    per_task = mcfg.inner_steps * min(mcfg.inner_batch, mcfg.n_support) + mcfg.n_query
    images = mcfg.steps * mcfg.tasks_per_step * per_task
    log.info("meta-training: %d steps, %.1f s, %d images", mcfg.steps, result.seconds, images)
    return MetaTrained(model=result.svi.model, guide=result.svi.guide, space=space,
                       seconds=result.seconds, images=images, losses=list(result.svi.losses))


def build_targets(cfg: ExperimentConfig, *, data_dir: str | Path | None = None) -> list[Target]:
    """Held-out targets: test task 0 of every procedural family, a digits test task (digits
    5-9), a 5-class Fashion-MNIST task (when the Debian package is installed) and 10-class
    CIFAR-10 / downsampled-ImageNet tasks found under ``data_dir``. ``cfg.targets`` filters."""
    space = build_space(cfg.meta_config())
    want = set(cfg.targets) if cfg.targets is not None else None
    keep = (lambda k: want is None or k in want)  # noqa: E731
    out: list[Target] = []
    proc = _procedural(cfg, space, cfg.target_support, cfg.target_query)
    out += [Target(f, f, proc.task(f, 0, "test")) for f in FAMILIES if keep(f)]
    if keep("digits"):
        out.append(Target("digits", "digits",
                          _digits(space, cfg.target_support, cfg.target_query).task(0, "test")))
    per = dict(image_size=space.input_size, channels=3)
    if keep("fashion_mnist") and FASHION_DIR.is_dir():
        dist = get_task_distribution("fashion_mnist", n_classes=5, **per,
                                     n_support=max(1, cfg.target_support // 5),
                                     n_query=max(1, cfg.target_query // 5))
        out.append(Target("fashion_mnist", "fashion_mnist", dist.tasks("test", 1)[0]))
    if data_dir is not None:
        found = 0
        for key in DATA_TARGETS:
            if not keep(key):
                continue
            opts: dict[str, Any] = dict(data_dir=data_dir, n_classes=10, **per,
                                        n_support=max(1, cfg.target_support // 10),
                                        n_query=max(1, cfg.target_query // 10))
            if key == "imagenet_ds":
                opts["train_batches"] = cfg.imagenet_batches
            try:
                task = get_task_distribution(key, **opts).tasks("test", 1)[0]
            except MissingDataError as e:
                log.info("no %s under %s: %s", key, data_dir, e)
                continue
            out.append(Target(key, key, task))
            found += 1
        if not found:
            raise FileNotFoundError(f"--data-dir {data_dir}: found neither CIFAR-10 python "
                                    "batches nor downsampled-ImageNet batches there")
    if want is not None and (unknown := want - {t.key for t in out}):
        raise ValueError(f"targets {sorted(unknown)} are not available; available: "
                         f"{[t.key for t in out]}")
    return out


def search_genotypes(cfg: ExperimentConfig, meta: MetaTrained, target: Target, *,
                     progress: bool = False) -> list[Found]:
    """One :class:`Found` per method of :data:`METHODS` on ``target`` (searched once)."""
    out: list[Found] = []
    batch = min(cfg.search_batch, len(target.task.support[0]))
    for name, steps in (("base_adapt", cfg.search_steps), ("base_prior", 0)):
        torch.manual_seed(cfg.seed)
        res = adapt(meta.model, meta.guide, target.task, steps=steps,
                    temperature=cfg.adapt_temperature, num_samples=cfg.num_samples)
        out.append(Found(name, res.genotype, res.seconds, steps * batch, steps,
                         extra={"supernet_query_accuracy": res.query_accuracy},
                         posterior=res.posterior))
    for method in ("darts", "darts_10x", "snas", "random"):
        res = run_search(method.removesuffix("_10x"), target.task, cfg.search_config(method),
                         progress=progress)
        c = res.cost
        out.append(Found(method, res.genotype, c.seconds, c.images,
                         c.forward_backward, extra={"steps": res.config["steps"]}))
    out += [Found(name, get_genotype(name), 0.0, 0, 0, extra={"published": True})
            for name in PUBLISHED]
    return out

