"""Posterior draws of adapted BASE posteriors, as ArviZ ``InferenceData``.

For every task ``t`` the adapted posterior ``q_t(theta, z) = q(theta, z | D_t^support)`` (the
optimization-embedding guide run on the support set, or ``q = W`` for the pseudo-task
``"prior"``) is sampled ``S`` times per chain by tracing it as a Pyro guide::

    (theta_s, z_s) ~ q_t                                  s = 1..S, chains = independent runs
    z_relaxed_s = relaxation.weights(z_s)                 [cell, edge, op]  (simplex weights)
    z_hard_s    = one_hot(argmax z_relaxed_s)             the op each edge uses in draw s
    op_probs    = softmax(phi_t)                          the posterior's op probabilities
    log_lik[s, n] = log p(y_n | x_n, theta_s, z_s)        query point n, first n_classes logits
    y_pred[s, n] ~ Categorical(p(. | x_n, theta_s, z_s))  a posterior predictive label
    theta_norm_s[l] = || theta_s[layer l] ||_2            per layer (ParamSpec.layer_slices)
    inner_loss[k]  = the adaptation's loss before inner step k (per chain)

``op_probs`` is deterministic given a chain's adapted parameters, so it is constant along
``draw`` (its spread over ``chain`` is the seed-to-seed spread of the inner loop). The full
weight vector is never stored.

Usage::

    draws = posterior_draws(model, guide, held_out_tasks, num_samples=100, temperature=0.3,
                            steps=50, num_chains=2, include_prior=True)
    idata = to_inference_data(draws)
    az.summary(idata)                              # z_relaxed, theta_norm of every task
    az.loo(idata)                                  # every task's query points, pooled
    az.loo(select_task(idata, "omniglot-3"))      # one task
    az.plot_ppc(idata)                             # predicted vs observed query labels
    save_posterior(idata, run_dir)                 # run_dir / "posterior.nc"

In the ``InferenceData`` the ``"prior"`` pseudo-task becomes the ``prior`` group, the
per-chain ``op_probs`` go to ``constant_data`` and ``y_pred`` to ``posterior_predictive``; the
full layout is described in :mod:`.inference_data`, the file checks in :mod:`.io`, and what a
guide, a posterior or a mapping yields as each task's chains in :mod:`.chains`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine

from pyro_base.inference.posterior.chains import (
    InnerLosses,
    PosteriorSource,
    pad_losses,
    task_chains,
    weight_posterior,
)
from pyro_base.inference.posterior.inference_data import (
    PRIOR,
    genotype_distribution,
    recorded_genotypes,
    select_task,
    to_inference_data,
)
from pyro_base.inference.posterior.io import (
    FORMAT,
    POSTERIOR_FILE,
    load_posterior,
    save_posterior,
    space_of,
)
from pyro_base.inference.run.run_dir import RunDirError, RunRecord, load_run, read_metrics
from pyro_base.inference.vi.guides import AdaptedPosterior
from pyro_base.models.base_model import BASEModel
from pyro_base.models.relaxations import check_temperature
from pyro_base.search_space import SearchSpace
from pyro_base.tasks.base import Task

__all__ = [
    "FORMAT", "POSTERIOR_FILE", "PRIOR", "InnerLosses", "PosteriorDraws", "PosteriorSource",
    "RunDirError", "RunRecord", "genotype_distribution", "load_posterior", "load_run",
    "posterior_draws", "read_metrics", "recorded_genotypes", "save_posterior", "select_task",
    "space_of", "to_inference_data",
]

log = logging.getLogger(__name__)


@dataclass
class PosteriorDraws:
    """Draws of every task's posterior, as numpy arrays (``chain, draw`` leading).

    ``z_relaxed``, ``z_hard``, ``op_probs``: ``[chain, draw, task, cell, edge, op]``;
    ``theta_norm``: ``[chain, draw, task, layer]``; ``log_lik[t]`` and ``y_pred[t]``:
    ``[chain, draw, n_t]`` and ``y[t]``: ``[n_t]`` for task ``t`` (``n_t = 0`` for the
    ``"prior"`` pseudo-task, always the last task when present); ``inner_loss``:
    ``[chain, task, step]``, NaN where no loss was recorded (the prior, a posterior given
    without its losses, or a loop that stopped early); ``step`` has length 0 when none was.
    """

    space: SearchSpace
    tasks: tuple[str, ...]
    families: tuple[str, ...]
    n_classes: tuple[int, ...]
    layers: tuple[str, ...]
    z_relaxed: np.ndarray
    z_hard: np.ndarray
    op_probs: np.ndarray
    theta_norm: np.ndarray
    log_lik: list[np.ndarray]
    y: list[np.ndarray]
    y_pred: list[np.ndarray] = field(default_factory=list)
    inner_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return int(self.z_relaxed.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.z_relaxed.shape[1])


def _layer_groups(names: Sequence[str], numels: Sequence[int],
                  depth: int | None) -> tuple[tuple[str, ...], torch.Tensor]:
    """Group label per parameter tensor (its first ``depth`` name parts), and an index that
    maps every entry of theta to its group."""
    labels = [n if depth is None else ".".join(n.split(".")[:depth]) for n in names]
    groups = tuple(dict.fromkeys(labels))
    gid = {g: i for i, g in enumerate(groups)}
    index = torch.repeat_interleave(torch.tensor([gid[lab] for lab in labels]),
                                    torch.tensor(list(numels)))
    return groups, index


@torch.no_grad()
def _draw_task(model: BASEModel, posts: Sequence[AdaptedPosterior], x: torch.Tensor,
               y: torch.Tensor, *, n_classes: int, num_samples: int, temperature: float,
               index: torch.Tensor, n_groups: int) -> dict[str, np.ndarray]:
    cells = model.space.cell_types
    out: dict[str, list] = {"z_relaxed": [], "z_hard": [], "op_probs": [], "theta_norm": [],
                            "log_lik": [], "y_pred": []}
    for post in posts:
        probs = torch.stack([post.op_probs()[c] for c in cells])
        rows: dict[str, list] = {k: [] for k in out}
        for _ in range(num_samples):
            tr = poutine.trace(post).get_trace(x, None, size=x.shape[0], n_classes=n_classes,
                                               temperature=temperature)
            z = {c: model.relaxation.weights(tr.nodes[f"z_{c}"]["value"]) for c in cells}
            w = torch.stack([z[c] for c in cells])
            theta = tr.nodes["theta"]["value"]
            sq = torch.zeros(n_groups, dtype=theta.dtype, device=theta.device)
            rows["theta_norm"].append(sq.index_add_(0, index, theta * theta).sqrt())
            rows["z_relaxed"].append(w)
            rows["z_hard"].append(torch.nn.functional.one_hot(w.argmax(-1), w.shape[-1]))
            rows["op_probs"].append(probs)
            if y.numel():
                logp = model.net_logits(x, theta, z, n_classes).log_softmax(-1)
                rows["log_lik"].append(logp.gather(-1, y[:, None]).squeeze(-1))
                rows["y_pred"].append(torch.distributions.Categorical(logits=logp).sample())
            else:
                rows["log_lik"].append(y.new_zeros(0, dtype=theta.dtype))
                rows["y_pred"].append(y.new_zeros(0))
        for k, v in rows.items():
            out[k].append(torch.stack(v))
    return {k: torch.stack(v).cpu().numpy() for k, v in out.items()}


def posterior_draws(model: BASEModel, guide_or_posteriors: PosteriorSource,
                    tasks: Sequence[Task], num_samples: int, *, temperature: float,
                    num_chains: int = 1, steps: int | None = None, include_prior: bool = False,
                    theta_depth: int | None = None, seed: int | None = None,
                    inner_losses: InnerLosses | None = None) -> PosteriorDraws:
    """Sample every task's posterior; see the module docstring for what is recorded.

    :param guide_or_posteriors: an :class:`OptimizationEmbeddingGuide` (adapted to each task's
        support set ``num_chains`` times: independent runs are the chains), one
        :class:`AdaptedPosterior` used for every task (e.g. ``guide.prior_posterior()`` to score
        the prior on each task's query set), or a mapping task name -> posterior, or -> a
        sequence of ``num_chains`` posteriors.
    :param tasks: tasks with distinct names; their query sets are scored.
    :param num_samples: draws per chain.
    :param temperature: relaxation temperature of the z draws (and of the adaptation).
    :param steps: inner steps of the adaptation (default: the guide's ``inner_steps``).
    :param include_prior: add the pseudo-task ``"prior"`` (``q = W``; no query points); needs
        the guide or a ``"prior"`` entry of the mapping.
    :param theta_depth: ``None``: one norm per parameter tensor; ``k``: one norm per group of
        tensors sharing the first ``k`` dotted name parts (``2``: ``stem.0``, ``cells.0``, ...).
    :param seed: passed to :func:`pyro.set_rng_seed` first (``None``: leave the RNG alone).
    :param inner_losses: the adaptation losses of given posteriors (a guide records its own):
        task name -> the per-step losses (shared by every chain) or one sequence per chain.
    """
    _check_arguments(model, tasks, num_samples, temperature=temperature,
                     num_chains=num_chains, theta_depth=theta_depth, include_prior=include_prior)
    if seed is not None:
        pyro.set_rng_seed(seed)
    device = model.W.mu.device
    layers, index = _layer_groups(model.spec.names, model.spec.numels, theta_depth)
    index = index.to(device)
    entries: list[Task | None] = [t.to(device) for t in tasks] + ([None] if include_prior else [])
    per_task, losses = [], []
    for task in entries:
        posts, task_losses = task_chains(guide_or_posteriors, task, num_chains=num_chains,
                                         steps=steps, temperature=temperature,
                                         inner_losses=inner_losses)
        losses.append(task_losses)
        x, y, n = _query_set(model, task, device)
        per_task.append(_draw_task(model, posts, x, y, n_classes=n, num_samples=num_samples,
                                   temperature=temperature, index=index, n_groups=len(layers)))
        log.debug("drew %d x %d samples for %s", num_chains, num_samples,
                  PRIOR if task is None else task.name)
    steps_used = steps if steps is not None else getattr(guide_or_posteriors, "inner_steps", -1)
    info = {"temperature": float(temperature), "relaxation": model.relaxation.name,
            "weight_posterior": weight_posterior(guide_or_posteriors),
            "steps": int(steps_used if steps_used is not None else -1)}
    return _assemble(model, tasks, entries, per_task, losses, layers=layers, info=info)


def _check_arguments(model: BASEModel, tasks: Sequence[Task], num_samples: int, *,
                     temperature: float, num_chains: int, theta_depth: int | None,
                     include_prior: bool) -> None:
    """Raise a ValueError naming the first bad argument of :func:`posterior_draws`."""
    check_temperature(temperature)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if num_chains < 1:
        raise ValueError(f"num_chains must be >= 1, got {num_chains}")
    if theta_depth is not None and theta_depth < 1:
        raise ValueError(f"theta_depth must be None or >= 1, got {theta_depth}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names) or PRIOR in names:
        raise ValueError(f"task names must be distinct and not {PRIOR!r}, got {names}")
    if not tasks and not include_prior:
        raise ValueError("no tasks given and include_prior=False: nothing to draw")
    for t in tasks:
        if not 2 <= t.n_classes <= model.space.n_classes:
            raise ValueError(f"task {t.name!r} has n_classes={t.n_classes}; the search space "
                             f"allows [2, {model.space.n_classes}]")


def _query_set(model: BASEModel, task: Task | None,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(x, y, n_classes)`` the draws of ``task`` are scored on; for the prior (``None``) one
    dummy image and no labels: the guide ignores ``x`` and the net is never run."""
    if task is not None:
        (x, y), n = task.query, task.n_classes
        return x, y, n
    s = model.space
    x = torch.zeros(1, s.in_channels, s.input_size, s.input_size, device=device)
    return x, torch.zeros(0, dtype=torch.int64, device=device), s.n_classes


def _assemble(model: BASEModel, tasks: Sequence[Task], entries: Sequence[Task | None],
              per_task: Sequence[dict[str, np.ndarray]], losses: list[list[list[float]]], *,
              layers: tuple[str, ...], info: dict[str, Any]) -> PosteriorDraws:
    """The :class:`PosteriorDraws` of every entry's :func:`_draw_task` arrays (the prior, if
    drawn, is the last entry)."""
    include_prior = len(entries) > len(tasks)
    stack = {k: np.stack([d[k] for d in per_task], axis=2)
             for k in ("z_relaxed", "z_hard", "op_probs", "theta_norm")}
    return PosteriorDraws(
        space=model.space,
        tasks=tuple(t.name for t in tasks) + ((PRIOR,) if include_prior else ()),
        families=tuple(t.family for t in tasks) + ((PRIOR,) if include_prior else ()),
        n_classes=tuple(t.n_classes for t in tasks)
        + ((model.space.n_classes,) if include_prior else ()),
        layers=layers,
        z_relaxed=stack["z_relaxed"].astype(np.float32),
        z_hard=stack["z_hard"].astype(np.int8),
        op_probs=stack["op_probs"].astype(np.float32),
        theta_norm=stack["theta_norm"].astype(np.float32),
        log_lik=[d["log_lik"].astype(np.float64) for d in per_task],
        y=[(t.query[1].cpu().numpy() if t is not None else np.zeros(0, np.int64))
           for t in entries],
        y_pred=[d["y_pred"].astype(np.int64) for d in per_task],
        inner_loss=pad_losses(losses),
        info=info,
    )
