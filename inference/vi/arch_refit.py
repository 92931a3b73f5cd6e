"""Refitting the architecture prior after meta-training: one EM step with a long E-step.

The mixture meta-step (``arch_update="mixture"``) is the M-step of empirical Bayes for a
categorical prior, ``p(z_e = o) <- mean_c q_c(z_e = o)``, taken part way (``lambda_e``) after an
E-step of ``T = inner_steps`` (5) inner steps per task. Five steps are enough for the weights'
Reptile step but not for the architecture posterior: ``q_c(z)`` has barely left the prior, so
the prior learns little of what the tasks would prefer after the longer adaptation a new task
gets. :func:`refit_architecture` takes, once, the full M-step after a long E-step:

    for each of C tasks of the training split:  phi_c = guide.adapt(D_c, steps=S)
    alpha_e <- log mean_c softmax(phi_c,e)          (every edge e of every cell)

starting every task from the meta-trained ``W`` (weights and logits), at the temperature new
tasks adapt at. Only the logits change; the weights' prior ``(mu, sigma)`` stays as
meta-training left it. A task whose inner loss turns non-finite is left out of the mean.

The tasks (:func:`refit_tasks`) are drawn from the training split by
``default_rng([seed, REFIT_STREAM, c])``, a stream of their own (meta-step ``e`` draws from
``[seed, e, c]``), stratified by family where the source has families, and task ``c``'s inner
loop is seeded from ``(seed, REFIT_STREAM, c)``: the refit is a pure function of ``W``, the
seed and its settings.

On the embedded task families the refit moves the whole meta-prior little (relation +0.03 to
+0.05 after 20 adaptation steps, 3 seeds x 8 test tasks per family); what it changes is the
architecture prior a new task can start from with the run's initial weights, the start that
relation's tasks choose. The main job refits from 20 tasks (``arch_refit_tasks``; 0: none).
Task ``c`` is the same whatever the number, so 40 tasks are the 20 plus 20 more; on three runs
the 40-task refit moved the default start by +0.00 to +0.02 per family, no interval excluding 0.

Cost: ``C * S`` inner steps, at the ``cpu`` preset about 0.11 s each on one CPU core (20 tasks
x 40 steps: 88 s in one process, 40-52 s spread over two; 40 tasks: 82-87 s over two).

Components. Where the tasks come from named families, the refit also keeps one component per
family, the same M-step over that family's tasks alone, ``alpha^(f)_e <- log mean_{c in f}
softmax(phi_c,e)`` (the pooled logits are the components' mixture, weighted by their task
counts, where every task has a family). They cost nothing more than the pooled refit (the
same adapted tasks, grouped; a refit checkpointed before them is reused without them), and
a new task, whose family is not known, can choose among them
(``"components"`` in :func:`~pyro_base.inference.run.selection.selection_starts`).

Usage::

    tasks = refit_tasks(distribution, n=20, seed=0)
    refit = refit_architecture(model, guide, tasks, steps=40, temperature=0.5, seed=0)
    model.W.load_state_dict(refit.apply(model.W.state_dict()))
    refit.to_state()            # what checkpoint.pt keeps under "arch_refit"
    refit.components["relation"]["alpha_normal"].exp()   # one family's component
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pyro_base.inference.vi.meta_common import task_seed
from pyro_base.tasks.base import Task, TaskDistribution

log = logging.getLogger(__name__)

REFIT_STREAM = 2**31 - 1  # the "step" of the refit's task and inner-loop seeds


@dataclass(frozen=True)
class ArchRefit:
    """Refit architecture logits (log-probabilities per edge) and what produced them."""

    logits: dict[str, torch.Tensor]
    tasks: int  # tasks adapted
    n_good: int  # tasks in the mean (those with a finite inner loss)
    steps: int
    temperature: float
    seed: int
    meta_step: int  # the meta-step of the W it refit
    # per family of the refit tasks (two or more families), the logits of its tasks alone
    components: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def apply(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` (of ``W``) with its architecture logits replaced by the refit ones."""
        missing = sorted(set(self.logits) - set(state))
        if missing:
            raise KeyError(f"the refit logits {missing} are not in this W ({sorted(state)})")
        return {k: (self.logits[k].to(v) if k in self.logits else v) for k, v in state.items()}

    def settings(self) -> dict[str, Any]:
        """What the refit is a function of (with ``W``): equal settings, equal logits."""
        return {"tasks": self.tasks, "steps": self.steps, "temperature": self.temperature,
                "seed": self.seed, "meta_step": self.meta_step}

    def to_state(self) -> dict[str, Any]:
        return {"logits": {k: v.detach().cpu() for k, v in self.logits.items()},
                "components": {f: {k: v.detach().cpu() for k, v in c.items()}
                               for f, c in self.components.items()},
                "n_good": self.n_good, **self.settings()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ArchRefit:
        return cls(logits=dict(state["logits"]), tasks=int(state["tasks"]),
                   n_good=int(state["n_good"]), steps=int(state["steps"]),
                   temperature=float(state["temperature"]),
                   seed=int(state["seed"]), meta_step=int(state["meta_step"]),
                   components={f: dict(c) for f, c in state.get("components", {}).items()})


def refit_tasks(distribution: TaskDistribution, n: int, *, seed: int) -> list[Task]:
    """The ``n`` training-split tasks of the refit, task ``c`` drawn from
    ``default_rng([seed, REFIT_STREAM, c])``. A source with families (procedural) gives task
    ``c`` its ``c mod K``-th listed family (stratified: each of the ``K`` entries has ``n // K``
    or one more tasks, so a family listed twice has twice the share),
    its seed drawn as the source's ``sample`` draws it; other sources' ``sample`` draws both."""
    if n < 1:
        raise ValueError(f"the refit needs at least one task, got n={n}")
    families = getattr(distribution, "families", None)
    stratified = families is not None and hasattr(distribution, "task")
    tasks = []
    for c in range(n):
        rng = np.random.default_rng([seed, REFIT_STREAM, c])
        if stratified:
            top = getattr(distribution, "n_tasks_per_split", None) or 2**31
            tasks.append(distribution.task(families[c % len(families)],
                                           int(rng.integers(top)), "train"))
        else:
            tasks.append(distribution.sample("train", rng))
    return tasks


def adapted_op_probs(model: Any, guide: Any, task: Task, c: int, *, steps: int,
                     temperature: float, seed: int) -> dict[str, torch.Tensor] | None:
    """Task ``c`` of the refit adapted for ``steps`` inner steps from ``model.W`` (seeded from
    ``(seed, REFIT_STREAM, c)``): its op probabilities per cell, ``None`` when its inner loss
    turned non-finite."""
    task = task.to(model.W.mu.device)
    torch.manual_seed(task_seed(seed, REFIT_STREAM, c))
    xs, ys = task.support
    post, losses = guide.adapt(xs, ys, n_classes=task.n_classes, temperature=temperature,
                               steps=steps)
    if len(losses) < steps or not all(math.isfinite(v) for v in losses):
        log.warning("arch refit: task %s has a non-finite inner loss; left out", task.name)
        return None
    return {n: v.detach().softmax(-1) for n, v in post.params.items() if n.startswith("alpha_")}


def _log_mean(good: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    # an op whose probability underflowed to 0 in every task keeps a finite logit
    return {n: torch.stack([p[n] for p in good]).mean(0).clamp_min(
        torch.finfo(good[0][n].dtype).tiny).log() for n in good[0]}


def combine(probs: Sequence[dict[str, torch.Tensor] | None], *, steps: int, temperature: float,
            seed: int, meta_step: int = 0, families: Sequence[str | None] | None = None,
            ) -> ArchRefit:
    """The refit from the tasks' :func:`adapted_op_probs` (in task order; ``None``: left out):
    ``log mean_c softmax(phi_c)`` per cell, and, where ``families`` (the tasks' families, in
    the same order; ``None``: a task without one, left out of the components) name two or
    more, the same per family (a family none of whose tasks had a finite loss has no
    component)."""
    good = [p for p in probs if p is not None]
    if not good:
        raise ValueError(f"arch refit: none of the {len(probs)} tasks had a finite inner loss")
    components: dict[str, dict[str, torch.Tensor]] = {}
    if families is not None:
        if len(families) != len(probs):
            raise ValueError(f"families has {len(families)} entries for {len(probs)} tasks")
        names = list(dict.fromkeys(f for f in families if f is not None))
        if len(names) >= 2:
            for f in names:
                mine = [p for p, g in zip(probs, families, strict=True)
                        if g == f and p is not None]
                if mine:
                    components[f] = _log_mean(mine)
    return ArchRefit(logits=_log_mean(good), tasks=len(probs), n_good=len(good), steps=steps,
                     temperature=temperature, seed=seed, meta_step=meta_step,
                     components=components)


def refit_architecture(model: Any, guide: Any, tasks: Sequence[Task], *, steps: int,
                       temperature: float, seed: int, meta_step: int = 0) -> ArchRefit:
    """Adapt every task of ``tasks`` for ``steps`` inner steps from ``model.W`` and return the
    log of the mean adapted op probabilities per edge (``model.W`` is not changed).

    :raises ValueError: ``steps < 1``, no tasks, or no task with a finite inner loss.
    """
    check_refit(tasks, steps)
    probs = [adapted_op_probs(model, guide, task, c, steps=steps, temperature=temperature,
                              seed=seed) for c, task in enumerate(tasks)]
    log.info("arch refit: %d tasks x %d steps at temperature %g", len(tasks), steps,
             temperature)
    return combine(probs, steps=steps, temperature=temperature, seed=seed, meta_step=meta_step,
                   families=[t.family for t in tasks])


def check_refit(tasks: Sequence[Task], steps: int) -> None:
    """Refuse a refit without tasks or without inner steps."""
    if steps < 1:
        raise ValueError(f"the refit's E-step needs at least one inner step, got {steps}")
    if not tasks:
        raise ValueError("the refit needs at least one task")
