"""Architecture-search baselines on the same supernet, data and decoders as BASE.

Every method searches one task's support split and returns a :class:`SearchResult` (genotype,
cost, op probabilities). The supernet edge computes ``sum_k z[e, k] op_k(h)``; the methods
differ only in what ``z`` is and how ``alpha`` and the weights ``w`` are fitted:

* ``darts`` (first order): ``z = softmax(alpha)`` (deterministic), point-estimate ``w``; each
  step first moves ``alpha`` by Adam on the *validation half*,
  ``alpha <- alpha - eta_a grad_alpha L_val(w, alpha)``, then ``w`` by SGD on the *train half*,
  ``w <- w - eta_w grad_w L_train(w, alpha)`` (first-order: ``w`` is not unrolled). Decoded
  with the DARTS rule.
* ``snas``: ``z ~ Concrete(alpha, tau)`` (Gumbel-softmax,
:class:`pyro_base.models.relaxations.Concrete`)
  with ``tau`` annealed exponentially ``tau_start -> tau_end``, point-estimate ``w``,
  single-level: ``w`` and ``alpha`` step on the gradient of the same batch loss
  ``E_z[L(w, z)]`` (one sample) over the whole support set. Decoded with the DARTS rule (SNAS'
  published cells keep two distinct inputs per node); ``rule`` overrides.
* ``random`` and ``base`` (from scratch): :mod:`pyro_base.inference.search.baselines`.

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
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pyro_base.genotype import decode
from pyro_base.inference.search.config import SearchConfig, SearchCost, SearchResult
from pyro_base.inference.search.setup import SearchSetup, space_for_task, split_half
from pyro_base.models.relaxations import Concrete
from pyro_base.models.temperature import ExponentialTemperature
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task
from pyro_base.training import deterministic_mode, weight_step

__all__ = ["METHODS", "SearchConfig", "SearchCost", "SearchResult", "darts_search",
           "run_search", "snas_search", "space_for_task"]

log = logging.getLogger(__name__)

METHODS = ("base", "darts", "snas", "random")


def _ce(net: SuperNet, x: torch.Tensor, y: torch.Tensor,
        z: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(net(x, z), y)


def darts_search(task: Task, config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """First-order DARTS (see the module docstring); ``config.rule`` defaults to ``darts``."""
    s = SearchSetup("darts", task, config, progress, config.steps)
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
    s = SearchSetup("snas", task, config, progress, config.steps)
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
    from pyro_base.inference.search.baselines import base_from_scratch, random_search

    table: dict[str, Callable[..., SearchResult]] = {
        "base": base_from_scratch, "darts": darts_search, "snas": snas_search,
        "random": random_search}
    if method not in table:
        raise ValueError(f"unknown search method {method!r}; expected one of {METHODS}")
    if not isinstance(config, SearchConfig):
        raise ValueError(f"config must be a SearchConfig, got {type(config).__name__}")
    with deterministic_mode(deterministic):
        return table[method](task, config, progress=progress)
