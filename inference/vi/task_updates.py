"""What one adapted task adds to a meta-step: its Reptile delta or its MAML query gradient.

A meta-step of :class:`~pyro_base.inference.vi.meta_svi.MetaSVI` adapts each of its tasks
from ``W`` (seeded by :func:`~pyro_base.inference.vi.meta_common.task_seed`) and sums the
tasks' contributions into ``acc``, by name of ``W``:

* ``mode="reptile"``: ``W - phi_c^T`` (and, with ``log_query``, the adapted posterior's
  per-datum negative ELBO on one support-sized query batch, as a metric); with
  ``arch_update="mixture"`` the architecture logits contribute the relative change of the op
  probabilities, ``softmax(phi_c^T) / softmax(W) - 1`` (:func:`probability_change`), instead,
  and :func:`mixture_delta` turns their sum into the step; with ``weight_update="query"`` the
  weights' prior ``(mu, log sigma)`` contributes instead the gradient of the adapted
  posterior's per-datum negative ELBO on one support-sized query batch with respect to the
  posterior's own ``(mu, log sigma)`` (the direction one more step on query data would take
  from ``psi_c^T``; unlike ``mode="maml", inner_grad="first"`` it leaves out the KL's direct
  dependence on the prior ``W``), while the logits keep the Reptile or mixture step;
* ``mode="maml"``: the gradient with respect to ``W`` of the query loss divided by the step's
  number of tasks.

A task whose inner losses, query loss, delta or gradient are not finite adds nothing; it is
passed to the step's ``on_bad`` (which raises or counts and warns). :func:`task_update`
adapts one task eagerly; :func:`batched_updates` adapts tasks of equal support shape together
in one ``vmap``-ed loop (Reptile); :func:`reduce_tasks` sums the step's good tasks and their
contributions over ``torch.distributed`` ranks.

Usage::

    ctx = StepContext(model=model, guide=guide, mode="reptile", inner_grad="first", seed=0,
                      log_query=True, step=step, tau=tau, acc=acc, deltas=[], on_bad=on_bad)
    records = [task_update(ctx, task, c, n_tasks=len(tasks)) for c, task in enumerate(tasks)]
    records = batched_updates(ctx, list(enumerate(tasks)))   # the same, adapted together
    good, loss, flat = reduce_tasks(records, ctx.acc, mode="reptile", device=device, world=1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from pyro_base.inference.vi.guides import (
    AdaptedPosterior,
    OptimizationEmbeddingGuide,
    finite_prefix,
)
from pyro_base.inference.vi.meta_common import task_seed
from pyro_base.models.base_model import BASEModel
from pyro_base.tasks.base import Task


@dataclass(frozen=True)
class StepContext:
    """What the tasks of one meta-step share, and where their contributions go.

    :param mode: ``"reptile"`` or ``"maml"``.
    :param inner_grad: MAML's ``order`` of the inner loop, ``"first"`` or ``"second"``.
    :param acc: the summed contributions, by name of ``W`` (added to in place).
    :param deltas: each good task's contribution, appended in order (for the agreement metric).
    :param on_bad: called as ``on_bad(step, task, inner_losses)`` for a non-finite task.
    :param arch_update: ``"reptile"`` (logit deltas) or ``"mixture"`` (relative changes of the
        op probabilities).
    :param weight_update: Reptile mode: ``"reptile"`` (the weights' deltas) or ``"query"`` (the
        query-batch gradient at the adapted weights' posterior).
    """

    model: BASEModel
    guide: OptimizationEmbeddingGuide
    mode: str
    inner_grad: str
    seed: int
    log_query: bool
    step: int
    tau: float
    acc: dict[str, torch.Tensor]
    deltas: list[dict[str, torch.Tensor]]
    on_bad: Callable[[int, Task, list[float]], None]
    arch_update: str = "reptile"
    weight_update: str = "reptile"


WEIGHT_KEYS = ("mu", "log_sigma")


def task_update(ctx: StepContext, task: Task, c: int, n_tasks: int) -> dict[str, Any]:
    """Adapt task ``c`` of the step (seeded by ``(seed, step, c)``) and add its contribution;
    ``n_tasks`` is the number of tasks of the step over all ranks. Returns its metrics."""
    post, losses = adapt_task(ctx, task, c)
    return record(ctx, task, post, losses, n_tasks)


def adapt_task(ctx: StepContext, task: Task, c: int) -> tuple[AdaptedPosterior, list[float]]:
    """Task ``c`` of the step adapted from ``ctx.model``'s ``W``, its inner loop seeded by
    ``(seed, step, c)``; returns the posterior and the inner losses."""
    torch.manual_seed(task_seed(ctx.seed, ctx.step, c))
    xs, ys = task.support
    order = "none" if ctx.mode == "reptile" else ctx.inner_grad
    return ctx.guide.adapt(xs, ys, n_classes=task.n_classes, temperature=ctx.tau, order=order)


def batched_updates(ctx: StepContext, tasks: list[tuple[int, Task]]) -> list[dict[str, Any]]:
    """Reptile updates of ``tasks`` [(c, task)], those of equal support shape adapted
    together (any class counts: a class mask per task)."""
    groups: dict[tuple, list[tuple[int, Task]]] = {}
    for c, task in tasks:
        groups.setdefault(tuple(task.support[0].shape), []).append((c, task))
    W = ctx.model.W.named_tensors()
    records: dict[int, dict[str, Any]] = {}
    for shape, group in groups.items():
        torch.manual_seed(task_seed(ctx.seed, ctx.step, group[0][0]))
        xs = torch.stack([task.support[0] for _, task in group])
        ys = torch.stack([task.support[1] for _, task in group])
        loop = ctx.guide.static_loop(x_shape=shape[1:], size=shape[0], tasks=len(group),
                                     device=xs.device, dtype=W["mu"].dtype)
        params, losses = loop.run(W, xs, ys, temperature=ctx.tau,
                                  n_classes=[task.n_classes for _, task in group])
        for i, (c, task) in enumerate(group):
            post = ctx.guide.posterior({n: p[i] for n, p in params.items()})
            records[c] = record(ctx, task, post, finite_prefix(losses[:, i].tolist()),
                                len(tasks))
    return [records[c] for c, _ in tasks]


def record(ctx: StepContext, task: Task, post: AdaptedPosterior, losses: list[float],
           n_tasks: int) -> dict[str, Any]:
    """Add one adapted task's contribution to ``ctx.acc``; returns its metrics."""
    if ctx.mode == "maml":
        return _maml_record(ctx, task, post, losses, n_tasks)
    rec, delta = reptile_contribution(ctx, task, post, losses)
    return accumulate(ctx, task, rec, delta, losses)


def _task_record(task: Task, losses: list[float]) -> dict[str, Any]:
    return {"task": task.name, "family": task.family,
            "inner_first": losses[0] if losses else None,
            "inner_last": losses[-1] if losses else None}


def _maml_record(ctx: StepContext, task: Task, post: AdaptedPosterior, losses: list[float],
                 n_tasks: int) -> dict[str, Any]:
    """MAML: add the gradient of the query loss over ``n_tasks`` with respect to ``W``."""
    xq, yq = task.query
    rec = _task_record(task, losses)
    q_loss = ctx.guide.loss(post, xq, yq, size=xq.shape[0], n_classes=task.n_classes,
                            temperature=ctx.tau)
    rec["query_loss"] = float(q_loss.detach())
    ok = all(math.isfinite(v) for v in losses) and math.isfinite(rec["query_loss"])
    if ok:
        W = ctx.model.W.named_tensors()
        grads = torch.autograd.grad(q_loss / n_tasks, list(W.values()), allow_unused=True)
        ok = all(g is None or bool(torch.isfinite(g).all()) for g in grads)
        if ok:
            for a, g in zip(ctx.acc.values(), grads, strict=True):
                if g is not None:
                    a.add_(g)
            ctx.deltas.append({n: torch.zeros_like(a) if g is None else g.detach()
                               for (n, a), g in zip(ctx.acc.items(), grads, strict=True)})
    rec["ok"] = bool(ok)
    if not ok:
        ctx.on_bad(ctx.step, task, losses)
    return rec


def reptile_contribution(ctx: StepContext, task: Task, post: AdaptedPosterior,
                         losses: list[float],
                         ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """One adapted task's Reptile metrics and contribution (``None`` if not finite), by name
    of ``W``: ``W - phi_c^T`` (the weights' query gradient with ``weight_update="query"``),
    before :func:`accumulate` turns the logits' into probability changes. Reads ``ctx`` (its
    model's ``W``, the guide, the step's settings) and draws the query loss's noise; writes
    nothing to it."""
    xq, yq = task.query
    rec = _task_record(task, losses)
    ok = all(math.isfinite(v) for v in losses) and all(
        bool(torch.isfinite(p).all()) for p in post.params.values())
    b = ctx.guide.batch_size or xq.shape[0]
    delta = None
    if ok:
        W = ctx.model.W.named_tensors()
        delta = {n: (p.detach() - post.params[n]).detach() for n, p in W.items()}
        if ctx.weight_update == "query":
            q_loss, grads = _query_gradient(ctx, post, xq[:b], yq[:b], xq.shape[0],
                                            task.n_classes)
            rec["query_loss"] = q_loss
            ok = math.isfinite(q_loss) and all(bool(torch.isfinite(g).all())
                                               for g in grads.values())
            delta.update(grads)
    if ok and ctx.log_query and "query_loss" not in rec:  # monitoring: one query batch
        with torch.no_grad():
            rec["query_loss"] = float(ctx.guide.loss(
                post, xq[:b], yq[:b], size=xq.shape[0], n_classes=task.n_classes,
                temperature=ctx.tau))
    return rec, delta if ok else None


def accumulate(ctx: StepContext, task: Task, rec: dict[str, Any],
               delta: dict[str, torch.Tensor] | None, losses: list[float]) -> dict[str, Any]:
    """Add a task's Reptile ``delta`` (from :func:`reptile_contribution`) to ``ctx.acc`` (the
    logits' as :func:`probability_change` under ``arch_update="mixture"``) and to
    ``ctx.deltas``, or pass a task without one to ``ctx.on_bad``; returns ``rec`` with ``ok``."""
    if delta is not None:
        W = ctx.model.W.named_tensors()
        for n, d in delta.items():
            if ctx.arch_update == "mixture" and n.startswith("alpha_"):
                ctx.acc[n].add_(probability_change(-d, W[n].detach()))
            else:
                ctx.acc[n].add_(d)
        ctx.deltas.append(delta)
    rec["ok"] = delta is not None
    if delta is None:
        ctx.on_bad(ctx.step, task, losses)
    return rec


def _query_gradient(ctx: StepContext, post: AdaptedPosterior, xq: torch.Tensor,
                    yq: torch.Tensor, size: int, n_classes: int,
                    ) -> tuple[float, dict[str, torch.Tensor]]:
    """The per-datum negative ELBO of ``post`` on ``(xq, yq)`` and its gradient with respect to
    the posterior's weight parameters (:data:`WEIGHT_KEYS`), the logits held fixed (zero for a
    parameter the posterior does not use: ``log sigma`` of a delta posterior)."""
    params = {n: p.detach().requires_grad_(n in WEIGHT_KEYS) for n, p in post.params.items()}
    loss = ctx.guide.loss(ctx.guide.posterior(params), xq, yq, size=size, n_classes=n_classes,
                          temperature=ctx.tau)
    grads = torch.autograd.grad(loss, [params[n] for n in WEIGHT_KEYS], allow_unused=True)
    return float(loss.detach()), {n: torch.zeros_like(params[n]) if g is None else g
                                  for n, g in zip(WEIGHT_KEYS, grads, strict=True)}


def probability_change(d: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(alpha + d) / softmax(alpha) - 1`` over the last axis (ops), computed from the
    logit change ``d`` without cancellation (``expm1``/``log1p`` of small numbers), so that
    float32 keeps the precision of ``d`` itself; ``alpha=None``: uniform logits."""
    if alpha is None:
        alpha = torch.zeros_like(d)
    shift = torch.log1p((alpha.softmax(-1) * torch.expm1(d)).sum(-1, keepdim=True))
    return torch.expm1(d - shift)


def mixture_delta(change_sum: torch.Tensor, good: int) -> torch.Tensor:
    """The mixture (empirical-Bayes) step of the architecture logits, times ``good``, from the
    sum over the ``good`` tasks of :func:`probability_change`: ``-good * log(mean_c
    softmax(phi_c) / softmax(alpha))``. With ``W.grad`` set to it over ``good``, ``SGD(lr=1)``
    moves the prior's log-probabilities onto the log of the tasks' mean posterior, the EM update
    of a categorical prior; a smaller ``lr`` moves part way."""
    mean = (change_sum / good).clamp_min(-1 + torch.finfo(change_sum.dtype).eps)
    return -good * torch.log1p(mean)


def reduce_tasks(records: list[dict[str, Any]], acc: dict[str, torch.Tensor], *, mode: str,
                 device: torch.device, world: int) -> tuple[int, float, torch.Tensor]:
    """The number of good tasks, their mean loss (MAML: query, Reptile: last inner) and the
    flat summed contributions ``acc``, all over the ``world`` ranks (one all-reduce each)."""
    key = "query_loss" if mode == "maml" else "inner_last"
    ok = [r for r in records if r["ok"]]
    # [good tasks, sum of their losses]: summed over ranks with the deltas, so the logged
    # loss is the mean over *all* tasks of the step, whatever the world size
    # (T = 0 inner steps: no inner loss, the logged loss is NaN)
    counts = torch.tensor([len(ok), sum(math.nan if r[key] is None else r[key] for r in ok)],
                          dtype=torch.float64, device=device)
    flat = torch.cat([a.reshape(-1) for a in acc.values()])
    if world > 1:
        tdist.all_reduce(flat)
        tdist.all_reduce(counts)
    good = int(counts[0].item())
    loss = float(counts[1].item()) / good if good else float("nan")
    return good, loss, flat
