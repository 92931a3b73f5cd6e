"""What meta-training shares with its callers: its result, its error, task seeds, the head.

:class:`~pyro_base.inference.vi.meta_svi.MetaSVI` returns a :class:`MetaSVIResult` and raises
:class:`NonFiniteLossError`; :func:`task_seed` makes task ``c`` of meta-step ``step`` a pure
function of ``(seed, step, c)``; :func:`head_slices` and :func:`zero_head` find and zero the
classifier head's location in ``W.mu``. All are re-exported by
:mod:`pyro_base.inference.vi.meta_svi`, where callers import them from.

Usage::

    torch.manual_seed(task_seed(seed, step, c))     # the inner loop's seed of one task
    zero_head(model)                                # every task starts from equal logits
    try:
        result = svi.run(tasks, num_steps=100)      # a MetaSVIResult
    except NonFiniteLossError:
        ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pyro_base.inference.vi.diagnostics import parameter_groups
from pyro_base.models.base_model import BASEModel


class NonFiniteLossError(RuntimeError):
    """Raised when a task's loss is NaN/Inf and the policy says stop."""


@dataclass
class MetaSVIResult:
    """What :meth:`MetaSVI.run` returns (cf. NumPyro's ``SVIRunResult``)."""

    params: dict[str, torch.Tensor]
    state: dict[str, Any]
    losses: list[float]
    metrics: list[dict[str, Any]] = field(default_factory=list)


def head_slices(model: BASEModel) -> list[slice]:
    """The classifier head's slices of ``W.mu`` (layers named ``classifier.*``)."""
    return parameter_groups(model.spec).get("mu_head", ("mu", []))[1] or []


@torch.no_grad()
def zero_head(model: BASEModel) -> None:
    """Put the classifier head's location in ``W.mu`` at zero: every task starts from equal
    logits (the head's scale ``sigma`` still breaks the symmetry between classes)."""
    for sl in head_slices(model):
        model.W.mu[sl] = 0.0


def task_seed(seed: int, step: int, c: int) -> int:
    """The seed of task ``c`` at meta-step ``step``; independent of the rank layout."""
    return int(np.random.default_rng([seed, step, c, 7]).integers(2**62))
