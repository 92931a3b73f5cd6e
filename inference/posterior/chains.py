"""The chains of a task's posterior: which adapted posteriors are sampled, and their losses.

:func:`~pyro_base.inference.posterior.draws.posterior_draws` takes its posteriors from a
*source*: an :class:`OptimizationEmbeddingGuide` (adapted to each task's support set once per
chain: independent runs are the chains, and the guide records its inner-loop losses), one
:class:`AdaptedPosterior` used for every task, or a mapping task name -> posterior(s) (with
optional losses given alongside). :func:`task_chains` resolves a source for one task (or the
``"prior"`` pseudo-task, ``q = W``), :func:`pad_losses` stacks the losses of every task.

Usage::

    posts, losses = task_chains(guide, task, num_chains=2, steps=50, temperature=0.3,
                                inner_losses=None)
    posts, losses = task_chains({"a": post}, None, num_chains=1, steps=None, temperature=0.3,
                                inner_losses={"a": [1.2, 0.9]})   # None: the prior
    inner_loss = pad_losses([losses_a, losses_b])                  # [chain, task, step]
    weight_posterior(guide)                                        # e.g. "delta"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pyro_base.inference.posterior.inference_data import PRIOR
from pyro_base.inference.vi.guides import AdaptedPosterior, OptimizationEmbeddingGuide
from pyro_base.tasks.base import Task

__all__ = ["InnerLosses", "PosteriorSource", "pad_losses", "task_chains", "weight_posterior"]

PosteriorSource = (OptimizationEmbeddingGuide | AdaptedPosterior
                   | Mapping[str, AdaptedPosterior | Sequence[AdaptedPosterior]])
InnerLosses = Mapping[str, Sequence[float] | Sequence[Sequence[float]]]


def task_chains(source: PosteriorSource, task: Task | None, *, num_chains: int,
                steps: int | None, temperature: float, inner_losses: InnerLosses | None,
                ) -> tuple[list[AdaptedPosterior], list[list[float]]]:
    """The ``num_chains`` posteriors of one task (``task=None``: the prior pseudo-task), and
    each chain's inner-loop losses (empty lists where unknown)."""
    name = PRIOR if task is None else task.name
    if isinstance(source, OptimizationEmbeddingGuide):
        if task is None:
            return [source.prior_posterior()] * num_chains, [[]] * num_chains
        (xs, ys) = task.support
        runs = [source.adapt(xs, ys, n_classes=task.n_classes, temperature=temperature,
                             steps=steps) for _ in range(num_chains)]
        return [post for post, _ in runs], [list(losses) for _, losses in runs]
    losses = _given_losses(inner_losses, name, num_chains)
    if isinstance(source, AdaptedPosterior):
        if task is None:
            raise ValueError("include_prior needs a guide, or a mapping with a 'prior' entry; "
                             "got a single AdaptedPosterior")
        return [source] * num_chains, losses
    if not isinstance(source, Mapping):
        raise ValueError(f"guide_or_posteriors must be an OptimizationEmbeddingGuide, an "
                         f"AdaptedPosterior or a mapping task -> posterior(s), got "
                         f"{type(source).__name__}")
    if name not in source:
        raise ValueError(f"no posterior for task {name!r}; the mapping has {sorted(source)}")
    entry = source[name]
    posts = [entry] * num_chains if isinstance(entry, AdaptedPosterior) else list(entry)
    if len(posts) != num_chains:
        raise ValueError(f"task {name!r} has {len(posts)} posteriors (chains); expected "
                         f"num_chains={num_chains}")
    return posts, losses


def _given_losses(inner_losses: InnerLosses | None, name: str,
                  num_chains: int) -> list[list[float]]:
    """``inner_losses[name]``: one sequence (shared by every chain) or one per chain."""
    if inner_losses is None or name not in inner_losses:
        return [[]] * num_chains
    entry = list(inner_losses[name])
    if not entry or not isinstance(entry[0], Sequence | np.ndarray):
        return [[float(v) for v in entry]] * num_chains
    if len(entry) != num_chains:
        raise ValueError(f"inner_losses[{name!r}] has {len(entry)} sequences (chains); "
                         f"expected num_chains={num_chains}")
    return [[float(v) for v in chain] for chain in entry]


def pad_losses(per_task: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """``[task][chain][step]`` lists -> ``[chain, task, step]``, NaN-padded to the longest."""
    n_steps = max((len(c) for t in per_task for c in t), default=0)
    n_chains = len(per_task[0]) if per_task else 0
    out = np.full((n_chains, len(per_task), n_steps), np.nan)
    for t, chains in enumerate(per_task):
        for c, losses in enumerate(chains):
            out[c, t, :len(losses)] = losses
    return out


def weight_posterior(source: PosteriorSource) -> str:
    """The weight posterior kind of the source's posteriors (``"/"``-joined when mixed)."""
    if isinstance(source, OptimizationEmbeddingGuide | AdaptedPosterior):
        return source.weight_posterior
    kinds = set()
    for entry in source.values():
        for post in [entry] if isinstance(entry, AdaptedPosterior) else entry:
            kinds.add(post.weight_posterior)
    return "/".join(sorted(kinds))
