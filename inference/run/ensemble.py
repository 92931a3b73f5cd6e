"""Adapting several starts and averaging their posteriors: ``transfer="ensemble"``.

A meta-prior helps a task whose data resemble the tasks it was learned from and can hurt one
whose data do not (on the embedded families, its weights memorise ``relation``'s support set,
and its sharpened architecture prior keeps ``cooccurrence``'s tasks from the pooling ops the
untrained start finds after 80 steps). Rather than betting on one start, the ensemble adapts
every start ``c`` of ``members`` on the whole support set ``D`` (the optimization-embedding
inner loop, each from the same seed) and takes the equally weighted mixture of the adapted
posteriors,

    q(theta, z | D) = (1/C) sum_c q_c(theta, z | D),
    p(y | x, D) = (1/C) sum_c E_{q_c}[ p(y | x, theta, z) ],

a mixture prior over where adaptation starts, each component updated by its own inner loop,
with fixed weights: weighting the components by their held-out scores (stacking on a quarter
of the support set, or the best score alone, as ``transfer="select"`` does) was screened on
the embedded families and did no better after 20 steps and worse after 80
(``docs/meta_learning.md``, "Averaging the starts"). Its
architecture marginal, the average of the members' op probabilities per edge, is what the
ensemble's genotype decodes. The cost is one adaptation per member on the whole support set
(three with the default members: the whole meta-prior, its architecture prior with the run's
initial weights ``W_0``, and ``W_0`` itself), against about three for ``select``'s choice
between two starts; no support image is held out, so one-shot support sets need no special
case.

Usage::

    starts = selection_starts(model, cfg, ("all", "architecture", "none"))
    ens = adapt_ensemble(model, guide, starts, xs, ys, n_classes=8, temperature=0.5,
                         steps=[0, 20], seed=0)
    probs = ensemble_probs(model, ens, 20, xq, n_classes=8, temperature=0.5, num_samples=4,
                           seed=1)
    ens.genotype(20, model.space), ens.op_probs(20)["normal"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pyro_base.genotype import Genotype, decode
from pyro_base.inference.vi.adapt import predictive_probs
from pyro_base.inference.vi.posterior_q import AdaptedPosterior
from pyro_base.search_space import SearchSpace


@dataclass(frozen=True)
class Ensemble:
    """Each member's adapted posterior after each step count, and its inner-loop losses."""

    members: tuple[str, ...]
    paths: dict[str, dict[int, AdaptedPosterior]]
    losses: dict[str, list[float]]

    def op_probs(self, k: int) -> dict[str, torch.Tensor]:
        """The mixture's op probabilities per cell type after ``k`` steps, ``[E, K]``: the
        members' averaged (the architecture marginal of an equally weighted mixture)."""
        cells = self.paths[self.members[0]][k].op_probs()
        return {c: torch.stack([self.paths[m][k].op_probs()[c] for m in self.members]).mean(0)
                for c in cells}

    def genotype(self, k: int, space: SearchSpace, *, rule: str = "base") -> Genotype:
        """The mixture's most probable cell after ``k`` steps (the decoding rule ``rule``)."""
        return decode(self.op_probs(k), space=space, rule=rule)


def adapt_ensemble(model: Any, guide: Any, starts: Mapping[str, Mapping[str, torch.Tensor]],
                   x: torch.Tensor, y: torch.Tensor, *, n_classes: int, temperature: float,
                   steps: Sequence[int], seed: int) -> Ensemble:
    """Adapt every start of ``starts`` (name -> state dict of ``model.W``) on ``(x, y)`` from
    the same seed ``seed``, keeping each one's posterior after each of ``steps``.
    ``model.W`` is left holding the last start's state."""
    if len(starts) < 2:
        raise ValueError(f"an ensemble needs at least two starts, got {list(starts)}")
    paths, losses = adapt_members(model, guide, starts, x, y, n_classes=n_classes,
                                  temperature=temperature, steps=steps, seed=seed)
    return Ensemble(members=tuple(starts), paths=paths, losses=losses)


def adapt_members(model: Any, guide: Any, starts: Mapping[str, Mapping[str, torch.Tensor]],
                  x: torch.Tensor, y: torch.Tensor, *, n_classes: int, temperature: float,
                  steps: Sequence[int], seed: int,
                  ) -> tuple[dict[str, dict[int, AdaptedPosterior]], dict[str, list[float]]]:
    """The members' half of :func:`adapt_ensemble`, for any number of starts (a caller that
    has adapted some members already adds the rest): each start adapted from ``seed``; its
    posteriors after ``steps`` (copied) and its losses, by start name."""
    paths, losses = {}, {}
    for name, state in starts.items():
        model.W.load_state_dict(dict(state))
        torch.manual_seed(seed)
        path, losses[name] = guide.adapt_path(x, y, n_classes=n_classes,
                                              temperature=temperature, steps=steps)
        paths[name] = {k: post.clone() for k, post in path.items()}
    return paths, losses


def ensemble_probs(model: Any, ensemble: Ensemble, k: int, x: torch.Tensor, *, n_classes: int,
                   temperature: float, num_samples: int, seed: int) -> torch.Tensor:
    """The mixture's posterior predictive after ``k`` steps, ``[B, n_classes]``: the mean of
    the members' (each drawn with ``num_samples`` samples from the seed ``seed``, so a
    member's part equals its own predictive read with that seed)."""
    total = None
    for name in ensemble.members:
        torch.manual_seed(seed)
        probs = predictive_probs(model, ensemble.paths[name][k], x, n_classes=n_classes,
                                 temperature=temperature, num_samples=num_samples)
        total = probs if total is None else total + probs
    return total / len(ensemble.members)
