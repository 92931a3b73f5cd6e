"""Per-meta-step diagnostics: do a step's tasks agree on where ``W`` should move?

For one parameter group and the ``C`` task contributions ``d_1 .. d_C`` of a meta-step,
flattened to vectors (Reptile: ``d_c = W - phi_c^T``; MAML: task ``c``'s query gradient)::

    cos         = mean over pairs c < c' of <d_c, d_c'> / (|d_c| |d_c'|)
    ratio       = |mean_c d_c| / mean_c |d_c|          (L2 norms)
    noise_ratio = 1 / sqrt(C)

Independent noise in many dimensions gives ``cos ~ 0`` and ``ratio ~ noise_ratio``; tasks that
agree give larger values, identical contributions ``cos = ratio = 1``, and contributions that
cancel ``ratio = 0``. For equal norms ``ratio = sqrt((1 + (C - 1) cos) / C)``. Both are
invariant to the scale (and sign) of all contributions together, so the meta step size, a
``1 / C`` factor or the sign of a gradient do not matter. A group in which some task did not
move at all (a zero vector) has no angle: its values are NaN (written ``"nan"`` to
``metrics.jsonl``).

Groups (:func:`parameter_groups`): ``mu_features`` (``mu`` without the classifier),
``mu_head`` (the classifier's weight and bias in ``mu``; its contribution is noise by
construction, the class labels being drawn per task), ``log_sigma``, and ``alpha_<cell>``.

Besides, :func:`arch_entropy_per_cell` and :func:`sigma_spread` summarise ``W`` itself.

Usage::

    agreement(torch.stack([d1, d2, d3]))  # {"cos": .., "ratio": .., "noise_ratio": 0.577}
    groups = parameter_groups(model.spec)
    step_agreement([{"mu": .., "log_sigma": .., "alpha_normal": ..}, ...], groups)
    # {"mu_features": {"cos": .., "ratio": .., "noise_ratio": ..}, "mu_head": {..}, ...}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pyro_base.genotype import decode, n_parameter_free
from pyro_base.models.priors import MetaParams
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import ParamSpec

HEAD_PREFIX = "classifier."


def _agreement(d: torch.Tensor) -> torch.Tensor:
    """``[cos, ratio]`` of the rows of ``d`` [C, n] (C >= 2), as a float64 tensor."""
    d = d.detach().reshape(d.shape[0], -1).double()
    c = d.shape[0]
    gram = d @ d.T
    norms = gram.diagonal().sqrt()
    cosines = gram / (norms[:, None] * norms[None, :])
    i, j = torch.triu_indices(c, c, offset=1, device=d.device)
    cos = cosines[i, j].mean()
    ratio = torch.linalg.vector_norm(d.mean(0)) / norms.mean()
    return torch.stack([cos, ratio])


def agreement(d: torch.Tensor) -> dict[str, float]:
    """``{"cos", "ratio", "noise_ratio"}`` of the rows of ``d`` [C, ...] (C >= 2 tasks)."""
    if d.shape[0] < 2:
        raise ValueError(f"agreement needs at least 2 task vectors, got {d.shape[0]}")
    cos, ratio = _agreement(d).tolist()
    return {"cos": cos, "ratio": ratio, "noise_ratio": 1.0 / math.sqrt(d.shape[0])}


def parameter_groups(spec: ParamSpec, cells: tuple[str, ...] = ()
                     ) -> dict[str, tuple[str, list[slice] | None]]:
    """``{group: (name in W, slices of that tensor or None for all of it)}``.

    The head is every layer of ``spec`` whose name starts with ``classifier.``; without one,
    ``mu_features`` is all of ``mu`` and there is no ``mu_head``.
    """
    head = sorted((s for n, s in spec.layer_slices().items() if n.startswith(HEAD_PREFIX)),
                  key=lambda s: s.start)
    features, start = [], 0
    for s in head:
        if s.start > start:
            features.append(slice(start, s.start))
        start = max(start, s.stop)
    if start < spec.size:
        features.append(slice(start, spec.size))
    groups: dict[str, tuple[str, list[slice] | None]] = {
        "mu_features": ("mu", features if head else None)}
    if head:
        groups["mu_head"] = ("mu", head)
    groups["log_sigma"] = ("log_sigma", None)
    groups.update({f"alpha_{c}": (f"alpha_{c}", None) for c in cells})
    return groups


def step_agreement(deltas: list[dict[str, torch.Tensor]],
                   groups: dict[str, tuple[str, list[slice] | None]],
                   ) -> dict[str, dict[str, float]] | None:
    """:func:`agreement` per group of the tasks' contributions ``deltas`` (one dict of W's
    tensors per task); ``None`` with fewer than 2 tasks. One device-to-host copy in all."""
    if len(deltas) < 2:
        return None
    rows = []
    for name, slices in groups.values():
        d = torch.stack([t[name].reshape(-1) for t in deltas])
        if slices is not None:
            d = torch.cat([d[:, s] for s in slices], dim=1)
        rows.append(_agreement(d))
    values = torch.stack(rows).tolist()
    noise = 1.0 / math.sqrt(len(deltas))
    return {g: {"cos": cos, "ratio": ratio, "noise_ratio": noise}
            for g, (cos, ratio) in zip(groups, values, strict=True)}


def arch_entropy_per_cell(W: MetaParams) -> dict[str, float]:
    """``{cell: mean over edges of the entropy (nats) of softmax(alpha_cell)}``."""
    out = {}
    for c in W.cells:
        p = W.alpha(c).detach().softmax(-1)
        out[c] = -(p * p.clamp_min(1e-12).log()).sum(-1).mean().item()
    return out


def sigma_spread(W: MetaParams) -> dict[str, float]:
    """``{"mean", "std", "min", "max"}`` of ``exp(log_sigma)`` (population std)."""
    s = W.log_sigma.detach().exp()
    mean, std, lo, hi = torch.stack([s.mean(), s.std(correction=0), s.min(), s.max()]).tolist()
    return {"mean": mean, "std": std, "min": lo, "max": hi}


def prior_summary(W: MetaParams, space: SearchSpace) -> dict[str, Any]:
    """The prior's state after a meta-step: mean and per-cell op entropy, sigma's spread, and
    the parameter-free ops of the genotype decoded from ``alpha``."""
    probs = {c: W.alpha(c).detach().softmax(-1) for c in W.cells}
    per_cell = arch_entropy_per_cell(W)
    return {"arch_entropy": float(np.mean(list(per_cell.values()))),
            "arch_entropy_per_cell": per_cell, "sigma": sigma_spread(W),
            "param_free_ops": int(n_parameter_free(decode(probs, space=space)))}
