"""Where a meta-step's disagreement comes from: seed noise, the task, or the family.

The per-step agreement of :mod:`~pyro_base.inference.vi.diagnostics` says *whether* a step's
task contributions point the same way. This module says *why not*: it adapts each of ``K``
tasks per family ``R`` times from the same ``W``, with ``R`` inner-loop seeds, and averages the
cosine between two contributions (per parameter group) over three kinds of pairs:

* ``seed``: the same task, two seeds. Below 1 only through the inner loop's own noise
  (support minibatches, relaxed-categorical and weight samples, Adam's normalised steps);
* ``task``: two tasks of one family;
* ``family``: two tasks of different families.

Under the additive model ``d = g + f_family + t_task + e_seed`` with independent, isotropic
parts of variances ``G, F, T, E`` (``V = G + F + T + E``), the expected cosines are
``seed = (G + F + T) / V``, ``task = (G + F) / V``, ``family = G / V``. A meta-step of ``C``
tasks drawn from ``n_f`` equally likely families has pairs of one family with probability
``1 / n_f``, so its expected pairwise cosine is ``rho = task / n_f + family (1 - 1 / n_f)``
and its ``ratio`` (:func:`~pyro_base.inference.vi.diagnostics.agreement`) over independent
noise is about ``sqrt(1 + (C - 1) rho)``: twice the noise needs ``C >= 1 + 3 / rho`` tasks per
step, whatever else is changed, unless ``rho`` rises.

Intervals are percentile bootstraps over tasks, resampled within each family (a task drawn
twice contributes its seed pairs twice and no pair with itself).

Usage::

    deltas = task_deltas(model, guide, tasks, seeds=3, tau=0.5)   # [task][seed] -> {name: t}
    with TaskPool(guide, workers=2) as pool:                      # the same, in 2 processes
        deltas = task_deltas(model, guide, tasks, seeds=3, tau=0.5, pool=pool)
    out = delta_levels(deltas, [t.family for t in tasks], parameter_groups(model.spec, cells))
    out["mu_features"]["task"]   # {"cos": .., "lo": .., "hi": ..}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.task_pool import TaskPool
from pyro_base.inference.vi.task_updates import StepContext, task_update
from pyro_base.models.base_model import BASEModel
from pyro_base.tasks.base import Task

KINDS = ("seed", "task", "family")


def task_deltas(model: BASEModel, guide: OptimizationEmbeddingGuide, tasks: Sequence[Task], *,
                seeds: int, tau: float, seed: int = 0, arch_update: str = "reptile",
                weight_update: str = "reptile", progress: bool = False,
                pool: TaskPool | None = None) -> list[list[dict[str, torch.Tensor]]]:
    """Each task's Reptile contribution from ``model``'s ``W`` under ``seeds`` inner-loop
    seeds: ``out[i][r]`` is what task ``i`` adds to a meta-step numbered ``r`` as its ``i``-th
    task (:func:`~pyro_base.inference.vi.task_updates.task_update`, seeded by
    ``(seed, r, i)``), by name of ``W``. ``W`` is left as it was. With ``pool`` (a
    :class:`~pyro_base.inference.vi.task_pool.TaskPool` of ``guide``), the tasks of a seed are
    adapted in its worker processes: the same floats as here with one torch thread."""
    if seeds < 2:
        raise ValueError(f"seeds must be >= 2 (pairs of one task), got {seeds}")
    by_seed: list[list[dict[str, torch.Tensor]]] = []
    bar = tqdm(total=len(tasks) * seeds, desc="adapting", disable=not progress)
    for r in range(seeds):
        acc = {n: torch.zeros_like(p) for n, p in model.W.named_tensors().items()}
        found: list[dict[str, torch.Tensor]] = []
        ctx = StepContext(model=model, guide=guide, mode="reptile", inner_grad="first",
                          seed=seed, log_query=False, step=r, tau=tau, acc=acc, deltas=found,
                          on_bad=_raise_bad, arch_update=arch_update,
                          weight_update=weight_update)
        if pool is not None:
            pool.updates(ctx, list(enumerate(tasks)))
            bar.update(len(tasks))
        else:
            for i, task in enumerate(tasks):
                task_update(ctx, task, i, len(tasks))
                bar.update()
        by_seed.append(found)
    bar.close()
    return [[by_seed[r][i] for r in range(seeds)] for i in range(len(tasks))]


def _raise_bad(step: int, task: Task, losses: list[float]) -> None:
    raise FloatingPointError(f"task {task.name} (seed {step}) did not adapt to finite values: "
                             f"inner losses {losses}")


def pair_cosines(d: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """From ``d`` [n tasks, R seeds, m]: ``within[i]``, the mean cosine of task ``i``'s seed
    pairs, and ``between[i, j]``, the mean cosine of the ``R x R`` pairs of tasks ``i != j``
    (its diagonal is NaN)."""
    n, r = d.shape[:2]
    flat = d.reshape(n * r, -1).double()
    unit = flat / flat.norm(dim=1, keepdim=True)
    cos = (unit @ unit.T).reshape(n, r, n, r).numpy()
    iu = np.triu_indices(r, 1)
    within = np.array([cos[i, :, i, :][iu].mean() for i in range(n)])
    between = cos.mean(axis=(1, 3))
    np.fill_diagonal(between, np.nan)
    return within, between


def _level_means(within: np.ndarray, between: np.ndarray, fam: np.ndarray,
                 idx: np.ndarray) -> np.ndarray:
    """``[seed, task, family]`` mean cosines of the tasks ``idx`` (with repeats)."""
    b = between[np.ix_(idx, idx)]
    same = (fam[idx][:, None] == fam[idx][None, :]) & ~np.isnan(b)
    other = fam[idx][:, None] != fam[idx][None, :]
    task = b[same].mean() if same.any() else np.nan
    family = b[other].mean() if other.any() else np.nan
    return np.array([within[idx].mean(), task, family])


def delta_levels(deltas: Sequence[Sequence[dict[str, torch.Tensor]]], families: Sequence[str],
                 groups: dict[str, tuple[str, list[slice] | None]], *, n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per group of :func:`~pyro_base.inference.vi.diagnostics.parameter_groups`: the mean
    cosine of each kind of pair (:data:`KINDS`) with its bootstrap interval, and ``rho``, the
    expected pairwise cosine of a meta-step drawing tasks from these families uniformly.

    :param deltas: ``deltas[i][r]``, task ``i``'s contribution under seed ``r``
        (:func:`task_deltas`); at least 2 tasks in some family (with one family, the
        ``family`` kind is NaN and ``rho`` is the ``task`` cosine).
    :param families: task ``i``'s family.
    """
    fam = np.asarray(families)
    names = list(dict.fromkeys(families))
    if len(deltas) != len(fam):
        raise ValueError(f"{len(deltas)} tasks of deltas but {len(fam)} families")
    counts = {f: int((fam == f).sum()) for f in names}
    if not counts or max(counts.values()) < 2:
        raise ValueError(f"delta_levels needs 2 tasks of one family, got {counts}")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(fam == f) for f in names]
    boot_idx = [np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
                for _ in range(n_boot)]
    out: dict[str, dict[str, Any]] = {}
    for group, (name, slices) in groups.items():
        d = torch.stack([torch.stack([s[name].reshape(-1) for s in row]) for row in deltas])
        if slices is not None:
            d = torch.cat([d[..., s] for s in slices], dim=-1)
        within, between = pair_cosines(d)
        full = _level_means(within, between, fam, np.arange(len(fam)))
        boot = np.array([_level_means(within, between, fam, i) for i in boot_idx])
        with warnings.catch_warnings():  # a kind without pairs (one family) is NaN throughout
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(boot, [50 * (1 - level), 50 * (1 + level)], axis=0)
        out[group] = {k: {"cos": float(full[j]), "lo": float(lo[j]), "hi": float(hi[j])}
                      for j, k in enumerate(KINDS)}
        rho = full[1] if len(names) == 1 else full[1] / len(names) + full[2] * (1 - 1 / len(names))
        out[group]["rho"] = float(rho)
        out[group]["tasks_for_2x_noise"] = (float(1 + 3 / rho) if rho > 0
                                            else math.nan if math.isnan(rho) else math.inf)
    return out
