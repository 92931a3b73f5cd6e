"""Architecture-search baselines on the same supernet, data and decoders as BASE.

Every method searches one task's support split and returns a :class:`SearchResult` (genotype,
cost, op probabilities). The supernet edge computes ``sum_k z[e, k] op_k(h)``; the methods
differ only in what ``z`` is and how ``alpha`` and the weights ``w`` are fitted:

* ``darts`` (first order): ``z = softmax(alpha)`` (deterministic), point-estimate ``w``; each
  step first moves ``alpha`` by Adam on the *validation half*,
  ``alpha <- alpha - eta_a grad_alpha L_val(w, alpha)``, then ``w`` by SGD on the *train half*,
  ``w <- w - eta_w grad_w L_train(w, alpha)`` (first-order: ``w`` is not unrolled). Decoded
  with the DARTS rule.
* ``snas``: ``z ~ Concrete(alpha, tau)`` (Gumbel-softmax, :class:`models.relaxations.Concrete`)
  with ``tau`` annealed exponentially ``tau_start -> tau_end``, point-estimate ``w``,
  single-level: ``w`` and ``alpha`` step on the gradient of the same batch loss
  ``E_z[L(w, z)]`` (one sample) over the whole support set. Decoded with the DARTS rule (SNAS'
  published cells keep two distinct inputs per node); ``rule`` overrides.
* ``random`` and ``base`` (from scratch): :mod:`inference.baselines`.

Cost is counted in supernet forward-backward passes and images, plus wall seconds.

Usage::

    task = ProceduralTasks(image_size=16).task("motif", seed=0, split="test")
    result = run_search("darts", task, SearchConfig.preset("cpu", steps=100))
    result.genotype.save("darts.json"); result.cost

References: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019;
Xie, Zheng, Liu, Lin, "SNAS: Stochastic Neural Architecture Search", ICLR 2019.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from inference._training import (
    deterministic_mode,
    infinite_batches,
    oom_guard,
    resolve_device,
    sgd_cosine,
    weight_step,
)
from inference.search_config import CostMeter, SearchConfig, SearchCost, SearchResult
from models.relaxations import Concrete
from models.temperature import ExponentialTemperature
from pyro_base.genotype import decode
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task

__all__ = ["METHODS", "SearchConfig", "SearchCost", "SearchResult", "darts_search",
           "run_search", "snas_search", "space_for_task"]

log = logging.getLogger(__name__)

METHODS = ("base", "darts", "snas", "random")


def space_for_task(config: SearchConfig, task: Task) -> SearchSpace:
    """``config.space`` preset with the task's image size, channels and class count."""
    c, h, w = task.image_shape
    if h != w:
        raise ValueError(f"search spaces need square images, task {task.name!r} has {h}x{w}")
    return SearchSpace.preset(config.space, input_size=int(h), in_channels=int(c),
                              n_classes=task.n_classes)


def split_half(x: torch.Tensor, y: torch.Tensor, seed: int,
               ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A seeded 50/50 split of the support set into train and validation halves (DARTS'
    ``train_portion=0.5``)."""
    if len(x) < 4:
        raise ValueError(f"the support set needs at least 4 images to split, got {len(x)}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    a, b = perm[: len(x) // 2], perm[len(x) // 2:]
    return (x[a], y[a]), (x[b], y[b])


class _Setup:
    """Shared state of a search run: device, space, supernet, data stream, meter, bar."""

    def __init__(self, method: str, task: Task, config: SearchConfig, progress: bool,
                 total: int) -> None:
        pyro.set_rng_seed(config.seed)
        self.method, self.task, self.config = method, task, config
        self.device = resolve_device(config.device)
        self.space = space_for_task(config, task)
        self.xs, self.ys = (t.to(self.device) for t in task.support)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.meter = CostMeter()
        self.losses: list[float] = []
        self.bar = tqdm(total=total, disable=not progress, desc=method, dynamic_ncols=True)

    def batches(self, x: torch.Tensor, y: torch.Tensor,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return infinite_batches(x, y, self.config.batch_size, self.generator)

    def supernet(self) -> tuple[SuperNet, torch.optim.Optimizer, Any]:
        cfg = self.config
        net = SuperNet(self.space).to(self.device)
        opt, sched = sgd_cosine(net.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                weight_decay=cfg.w_weight_decay, total_steps=cfg.steps,
                                lr_min=cfg.w_lr_min)
        return net, opt, sched

    def alpha(self) -> tuple[dict[str, torch.Tensor], torch.optim.Adam]:
        """DARTS' architecture parameters ``1e-3 * N(0, 1)`` and their Adam optimizer."""
        cfg = self.config
        alpha = {c: (1e-3 * torch.randn(self.space.z_shape, device=self.device))
                 .requires_grad_(True) for c in self.space.cell_types}
        opt = torch.optim.Adam(alpha.values(), lr=cfg.arch_lr,
                               betas=(cfg.arch_beta1, cfg.arch_beta2),
                               weight_decay=cfg.arch_weight_decay)
        return alpha, opt

    def log_step(self, loss: torch.Tensor) -> None:
        self.losses.append(float(loss.detach()))
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}")

    def guard(self) -> Any:
        return oom_guard(f"searching with {self.method}", batch_size=self.config.batch_size,
                         channels=self.space.channels)

    def result(self, genotype: Any, op_probs: dict[str, torch.Tensor], rule: str | None,
               extra: dict[str, Any] | None = None) -> SearchResult:
        self.bar.close()
        cost = self.meter.cost()
        log.info("%s search on %s: %.1f s, %d forward-backward passes, %d images",
                 self.method, self.task.name, cost.seconds, cost.forward_backward, cost.images)
        return SearchResult(
            method=self.method, genotype=genotype, cost=cost,
            op_probs={c: p.detach().cpu().tolist() for c, p in op_probs.items()}, rule=rule,
            task=self.task.name, space=self.space.to_dict(), config=self.config.to_dict(),
            losses=self.losses, extra=extra or {})


def _ce(net: SuperNet, x: torch.Tensor, y: torch.Tensor,
        z: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(net(x, z), y)


def darts_search(task: Task, config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """First-order DARTS (see the module docstring); ``config.rule`` defaults to ``darts``."""
    s = _Setup("darts", task, config, progress, config.steps)
    train, val = split_half(s.xs, s.ys, config.seed)
    with s.guard():
        net, w_opt, sched = s.supernet()
        alpha, a_opt = s.alpha()
        params = list(net.parameters())
        train_batches, val_batches = s.batches(*train), s.batches(*val)
        for _ in range(config.steps):
            xv, yv = next(val_batches)
            a_opt.zero_grad(set_to_none=True)
            _ce(net, xv, yv, {c: a.softmax(-1) for c, a in alpha.items()}).backward()
            a_opt.step()
            s.meter.backward(len(xv))
            xt, yt = next(train_batches)
            loss = _ce(net, xt, yt, {c: a.detach().softmax(-1) for c, a in alpha.items()})
            weight_step(loss, params, w_opt, grad_clip=config.grad_clip)
            sched.step()
            s.meter.backward(len(xt))
            s.log_step(loss)
    probs = {c: a.detach().softmax(-1) for c, a in alpha.items()}
    rule = config.rule or "darts"
    return s.result(decode(probs, space=s.space, rule=rule), probs, rule)


def snas_search(task: Task, config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """SNAS-style single-level search (see the module docstring); rule defaults to ``darts``."""
    s = _Setup("snas", task, config, progress, config.steps)
    schedule = ExponentialTemperature(start=config.tau_start, end=config.tau_end,
                                      steps=config.steps)
    relax = Concrete()
    with s.guard():
        net, w_opt, sched = s.supernet()
        alpha, a_opt = s.alpha()
        params = list(net.parameters())
        batches = s.batches(s.xs, s.ys)
        for step in range(config.steps):
            x, y = next(batches)
            tau = schedule(step)
            z = {c: relax.weights(relax.dist(a, tau).rsample()) for c, a in alpha.items()}
            loss = _ce(net, x, y, z)
            a_opt.zero_grad(set_to_none=True)
            weight_step(loss, params, w_opt, grad_clip=config.grad_clip)   # backward once
            a_opt.step()
            sched.step()
            s.meter.backward(len(x))
            s.log_step(loss)
    probs = {c: a.detach().softmax(-1) for c, a in alpha.items()}
    rule = config.rule or "darts"
    return s.result(decode(probs, space=s.space, rule=rule), probs, rule,
                    extra={"final_temperature": schedule(config.steps)})


def run_search(method: str, task: Task, config: SearchConfig, *, progress: bool = True,
               deterministic: bool = False) -> SearchResult:
    """Run ``method`` (one of :data:`METHODS`) on ``task``."""
    from inference.baselines import base_from_scratch, random_search

    table: dict[str, Callable[..., SearchResult]] = {
        "base": base_from_scratch, "darts": darts_search, "snas": snas_search,
        "random": random_search}
    if method not in table:
        raise ValueError(f"unknown search method {method!r}; expected one of {METHODS}")
    if not isinstance(config, SearchConfig):
        raise ValueError(f"config must be a SearchConfig, got {type(config).__name__}")
    with deterministic_mode(deterministic):
        return table[method](task, config, progress=progress)
