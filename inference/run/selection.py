"""Choosing where a task's adaptation starts, by held-out accuracy on part of its support set.

A meta-prior can transfer features that fit a new task's support set fast without
generalising (on the embedded families, the meta-trained weights memorise ``relation``'s
support set, and after 40 or more steps lose to the untrained start). Which start serves a
task best is an empirical question about that task, and its support set can answer it:

1. split the support set, class by class, into a fit part (3/4) and a held-out part (1/4,
   at least one image of every class that has two) (:func:`holdout_mask`);
2. adapt each candidate start on the fit part, from the same seed, and read the posterior
   predictive's accuracy and mean log-likelihood on the held-out part after each step count;
3. per step count, choose the candidate with the highest held-out score, by ``criterion``:
   ``"accuracy"``, or ``"loglik"``, the mean log predictive density
   ``(1/m) sum_j log p(y_j | x_j, D_fit)``, a proper scoring rule that also weighs how sure
   each prediction is (on a held-out part of some 20 images accuracy ties often); a tie goes
   to the earlier candidate (the meta-prior comes first), so the meta-prior is left only on
   evidence.

The chosen start is then adapted on the whole support set, by the caller. The choice costs
one adaptation per candidate on 3/4 of the support set: with two candidates, about three times
one adaptation in all.

The candidates are named starts (:func:`selection_starts`): the transfers of
:data:`~pyro_base.inference.run.factory.TRANSFERS`, and ``"components"``, which stands for one
candidate per family component of the run's architecture refit
(:class:`~pyro_base.inference.vi.arch_refit.ArchRefit`), ``"architecture:<family>"``: that
component's logits, sharpened as every start's are, with the run's initial weights ``W_0``.
The task's family is never asked: its held-out score picks the component, or another start.
A run without components (one family, or no refit) has its pooled ``"architecture"`` start
in their place.

Usage::

    sel = select_start(model, guide, {"all": meta_state, "none": w0_state}, xs, ys,
                       n_classes=8, steps=[20, 80], temperature=0.5, num_samples=4, seed=0,
                       criterion="loglik")
    sel.chosen[80], sel.heldout_accuracy["none"], sel.heldout_loglik["none"]
    starts = selection_starts(model, cfg, ("all", "components"), components=refit.components)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyro_base import defaults
from pyro_base.config import ConfigError
from pyro_base.inference.run.factory import (
    TRANSFERS,
    build_model,
    sharpen_architecture,
    transfer_state,
)
from pyro_base.inference.vi.adapt import predictive_probs
from pyro_base.inference.vi.arch_refit import ArchRefit

log = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.25
CRITERIA = ("accuracy", "loglik")  # the held-out scores a choice may maximise
COMPONENTS = "components"  # in select_from: every family component of the refit, W_0's weights
CANDIDATES = (*TRANSFERS, COMPONENTS)  # the names select_from may hold
NO_COMPONENTS = ("the run's refit has no family components (one family, no refit, or a "
                 "checkpoint from before them), so 'components' is its architecture start")


def holdout_mask(y: torch.Tensor, *, n_classes: int, fraction: float = HOLDOUT_FRACTION,
                 seed: int = 0) -> torch.Tensor:
    """A boolean mask of the held-out part of a support set with labels ``y``: of each class's
    ``n_c >= 2`` images, ``max(1, floor(fraction * n_c))`` drawn at random (seeded), so every
    class keeps images in the fit part (a class of one image is not held out). A support set
    that leaves nothing held out (one image per class) is refused."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng([seed, 23])
    labels = y.detach().cpu().numpy()
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) >= 2:
            n_held = max(1, math.floor(fraction * len(idx) + 1e-9))
            mask[rng.permutation(idx)[:n_held]] = True
    if not mask.any():
        raise ValueError(f"a support set of {len(labels)} images over {n_classes} classes "
                         "leaves no image held out: choosing a start needs at least 2 images "
                         "of some class")
    return torch.as_tensor(mask, device=y.device)


def can_hold_out(y: torch.Tensor, *, n_classes: int) -> bool:
    """Whether a support set with labels ``y`` leaves an image to hold out (some class has
    two): a one-shot support set does not, and a choice of start falls back on the first."""
    return bool((torch.bincount(y.detach().cpu(), minlength=n_classes) >= 2).any())


@dataclass(frozen=True)
class Selection:
    """The held-out scores of each candidate start and the choice per step count."""

    candidates: tuple[str, ...]
    steps: list[int]
    heldout_accuracy: dict[str, list[float]]
    heldout_loglik: dict[str, list[float]]
    chosen: dict[int, str]
    fit_size: int
    heldout_size: int
    criterion: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": list(self.candidates), "steps": self.steps,
                "heldout_accuracy": self.heldout_accuracy,
                "heldout_loglik": self.heldout_loglik,
                "chosen": {str(k): v for k, v in self.chosen.items()},
                "criterion": self.criterion,
                "fit_size": self.fit_size, "heldout_size": self.heldout_size}


def choose(scores: Mapping[str, Sequence[float]], steps: Sequence[int]) -> dict[int, str]:
    """Per step count, the candidate of highest held-out score (ties: the earlier one)."""
    names = list(scores)
    return {k: max(names, key=lambda n: (scores[n][j], -names.index(n)))
            for j, k in enumerate(steps)}


def select_start(model: Any, guide: Any, starts: Mapping[str, Mapping[str, torch.Tensor]],
                 x: torch.Tensor, y: torch.Tensor, *, n_classes: int, steps: Sequence[int],
                 temperature: float, num_samples: int, seed: int,
                 fraction: float = HOLDOUT_FRACTION, criterion: str = "accuracy") -> Selection:
    """Score each start of ``starts`` (name -> state dict of ``model.W``, the preferred one
    first) on a held-out part of the support set ``(x, y)`` after each of ``steps``, and
    choose per step count by ``criterion`` (one of :data:`CRITERIA`; see the module
    docstring). ``model.W`` is left holding the last candidate's state: load the chosen one
    before adapting on the whole support set.
    """
    if len(starts) < 2:
        raise ValueError(f"choosing a start needs at least two candidates, got {list(starts)}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    steps = sorted({int(k) for k in steps})
    held = holdout_mask(y, n_classes=n_classes, fraction=fraction, seed=seed)
    xf, yf, xh, yh = x[~held], y[~held], x[held], y[held]
    accuracy: dict[str, list[float]] = {}
    loglik: dict[str, list[float]] = {}
    for name, state in starts.items():
        model.W.load_state_dict(dict(state))
        torch.manual_seed(seed)
        path, _ = guide.adapt_path(xf, yf, n_classes=n_classes, temperature=temperature,
                                   steps=steps)
        accuracy[name], loglik[name] = [], []
        for k in steps:
            torch.manual_seed(seed + 1 + k)
            probs = predictive_probs(model, path[k], xh, n_classes=n_classes,
                                     temperature=temperature, num_samples=num_samples)
            accuracy[name].append(float((probs.argmax(-1) == yh).float().mean()))
            loglik[name].append(float(probs.gather(-1, yh[:, None]).clamp_min(1e-12).log()
                                      .mean()))
    return Selection(candidates=tuple(starts), steps=steps, heldout_accuracy=accuracy,
                     heldout_loglik=loglik,
                     chosen=choose(accuracy if criterion == "accuracy" else loglik, steps),
                     fit_size=int((~held).sum()), heldout_size=int(held.sum()),
                     criterion=criterion)


def check_select_from(select_from: Sequence[str], *,
                      flag: str = "select_from (--select-from)") -> tuple[str, ...]:
    """``select_from`` as a tuple of at least two distinct names of :data:`CANDIDATES` (or
    ``"components"`` alone, which may stand for several); anything else is a
    ``ConfigError``."""
    names = (select_from,) if isinstance(select_from, str) else tuple(select_from)
    if (len(names) < (1 if names == (COMPONENTS,) else 2) or len(set(names)) != len(names)
            or any(n not in CANDIDATES for n in names)):
        raise ConfigError(f"{flag} must be at least two distinct names "
                          f"from {CANDIDATES}, the preferred first, or {COMPONENTS!r} alone; "
                          f"got {list(names)!r}")
    return names


def component_name(family: str) -> str:
    """The candidate name of one family component: ``"architecture:<family>"``."""
    return f"architecture:{family}"


def component_state(state: Mapping[str, torch.Tensor], logits: Mapping[str, torch.Tensor],
                    sharpness: float) -> dict[str, torch.Tensor]:
    """``state`` with its architecture logits replaced by ``sharpness`` times a component's
    ``logits`` (log-probabilities per edge), the power every start's prior is raised to."""
    alphas = {k for k in state if k.startswith("alpha_")}
    if set(logits) != alphas:
        raise KeyError(f"a component holds the logits {sorted(logits)}, this W's architecture "
                       f"logits are {sorted(alphas)}")
    return sharpen_architecture({k: (logits[k].to(v) if k in logits else v)
                                 for k, v in state.items()}, sharpness)


def selection_starts(model: Any, cfg: Any, select_from: Sequence[str] = defaults.SELECT_FROM,
                     *, components: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                     ) -> dict[str, dict[str, torch.Tensor]]:
    """The candidates of ``transfer="select"`` (``select_from``, names of :data:`CANDIDATES`)
    as state dicts of ``model.W``, built from its meta-trained ``W`` (its architecture prior
    already sharpened) and the run's ``W_0`` (rebuilt from ``cfg``); ``"components"`` stands
    for one start per entry of ``components`` (family -> refit logits,
    :attr:`~pyro_base.inference.vi.arch_refit.ArchRefit.components`), sharpened by
    ``cfg.adapt_sharpness``, in the order of the refit's families (a tie among them goes to
    the earlier family; the order means nothing more). Where the run has no components (one
    family, no refit, or a checkpoint from before them) the pooled architecture start,
    ``"architecture"``, stands in for them (it is the one component there is); fewer than
    two starts is a ``ConfigError``."""
    names = check_select_from(select_from)
    meta = {k: v.detach().clone() for k, v in model.W.state_dict().items()}
    initial = build_model(cfg, model.space, device=model.W.mu.device).W.state_dict()
    starts: dict[str, dict[str, torch.Tensor]] = {}
    for name in names:
        if name != COMPONENTS:
            starts[name] = transfer_state(meta, initial, transfer=name)
            continue
        arch = transfer_state(meta, initial, transfer="architecture")
        if not components:
            log.info("%s", NO_COMPONENTS)
            starts.setdefault("architecture", arch)
        for family, logits in (components or {}).items():
            starts[component_name(family)] = component_state(arch, logits, cfg.adapt_sharpness)
    if len(starts) < 2:
        why = f"; {NO_COMPONENTS}" if COMPONENTS in names and not components else ""
        raise ConfigError(f"select_from (--select-from) {list(names)} gives {len(starts)} "
                          f"start(s) ({list(starts)}){why}: a choice needs at least two, "
                          f"add another start")
    return starts


def checkpoint_components(state: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The family components of a checkpoint's architecture refit (none without a refit)."""
    return ArchRefit.from_state(state["arch_refit"]).components if "arch_refit" in state else {}
