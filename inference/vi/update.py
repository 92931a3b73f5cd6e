"""The inner loop's update rule, one implementation for the eager and the static loop.

Per parameter group (``mu``: the weights' location, ``log_sigma``: their scale, ``alpha_<cell>``:
the architecture logits) a step size, and a rule (``optimizer`` for the weights,
``arch_optimizer`` for the logits):

* ``sgd``: ``p <- p - lr * g``;
* ``adam`` (restarted for every task, bias-corrected; ``b1 = beta1``, 0.9 by default, and
  ``b2 = 0.999``)::

      m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
      p <- p - lr * (m / (1 - b1^t)) / sqrt(v / (1 - b2^t) + eps^2)

  (``eps`` inside the root keeps the step smooth at ``v = 0``, so a second-order unroll through
  it is finite).

:meth:`InnerUpdate.step` is the functional form (new tensors; differentiable, used by the eager
loop and MAML's unroll); :meth:`InnerUpdate.step_` writes into static buffers (the captured /
vmapped loop); both call :func:`adam_update`.

Usage::

    update = InnerUpdate(optimizer="adam", lr=0.03, arch_optimizer="sgd", arch_lr=30.0)
    state = update.init_state(params, names)
    params = update.step(params, grads, state, t=1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from pyro_base import defaults

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
OPTIMIZERS = ("adam", "sgd")


def adam_update(p: torch.Tensor, lr: float, m: torch.Tensor, v: torch.Tensor,
                bc1: float | torch.Tensor, bc2: float | torch.Tensor) -> torch.Tensor:
    """``p - lr * m_hat / sqrt(v_hat + eps^2)`` with ``m_hat = m / bc1``, ``bc = 1 - beta^t``."""
    return p - lr * (m / bc1) / (v / bc2 + ADAM_EPS * ADAM_EPS).sqrt()


@dataclass(frozen=True, kw_only=True)
class InnerUpdate:
    """Which parameters move in the inner loop, by how much, and by which rule.

    :param optimizer: ``"adam"`` or ``"sgd"``, the rule of ``mu`` and ``log_sigma``.
    :param lr: step size of ``mu``.
    :param arch_optimizer: the rule of the ``alpha_<cell>`` logits (``None``: ``optimizer``).
        Adam's first step is ``lr * sign(g)`` on every coordinate, so for the logits, whose
        gradients are small (~1e-3 per datum) and mostly noise, a restarted Adam turns noise
        into full-size steps; plain SGD keeps their size.
    :param arch_lr: step size of the ``alpha_<cell>`` logits (``None``: ``lr`` for Adam,
        ``10 * lr`` for SGD).
    :param scale_lr: step size of ``log_sigma`` (``None``: ``lr``).
    :param weight_posterior: ``"delta"`` keeps ``log_sigma`` fixed (a point estimate of theta).
    :param beta1: Adam's first-moment decay, in ``[0, 1)``; ``0`` is Adam without momentum,
        as in the Reptile paper's inner loop (each step ``lr * g / sqrt(v_hat)``).
    """

    optimizer: str = "adam"
    lr: float = defaults.INNER_LR
    arch_optimizer: str | None = defaults.ARCH_OPTIMIZER
    arch_lr: float | None = defaults.ARCH_LR
    scale_lr: float | None = None
    weight_posterior: str = "gaussian"
    beta1: float = ADAM_BETAS[0]

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {OPTIMIZERS}, got "
                             f"{self.optimizer!r}")
        if self.arch_optimizer is not None and self.arch_optimizer not in OPTIMIZERS:
            raise ValueError(f"arch_optimizer must be None or one of {OPTIMIZERS}, got "
                             f"{self.arch_optimizer!r}")
        for name in ("lr", "arch_lr", "scale_lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                label = "inner_lr" if name == "lr" else name
                raise ValueError(f"{label} must be a finite number > 0, got {v!r}")
        b1 = self.beta1
        if not (isinstance(b1, int | float) and not isinstance(b1, bool) and 0 <= b1 < 1):
            raise ValueError(f"inner_beta1 must be a number in [0, 1), got {b1!r}")

    def rule(self, name: str) -> str:
        """``"adam"`` or ``"sgd"``: the rule of parameter group ``name``."""
        if name in ("mu", "log_sigma") or self.arch_optimizer is None:
            return self.optimizer
        return self.arch_optimizer

    def step_size(self, name: str) -> float:
        """The step size of parameter group ``name``."""
        if name == "mu":
            return self.lr
        if name == "log_sigma":
            return self.scale_lr if self.scale_lr is not None else self.lr
        if self.arch_lr is not None:
            return self.arch_lr
        return self.lr if self.rule(name) == "adam" else 10 * self.lr

    def moving(self, names: Iterable[str]) -> list[str]:
        """The parameters the inner loop moves (all but ``log_sigma`` of a delta posterior)."""
        return [n for n in names if not (n == "log_sigma" and self.weight_posterior == "delta")]

    def init_state(self, params: Mapping[str, torch.Tensor], names: Iterable[str],
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Adam's zero moments per moving parameter that Adam updates (none for SGD)."""
        return {n: (torch.zeros_like(params[n]), torch.zeros_like(params[n])) for n in names
                if self.rule(n) == "adam"}

    def step(self, name: str, p: torch.Tensor, g: torch.Tensor,
             state: dict[str, tuple[torch.Tensor, torch.Tensor]], t: int) -> torch.Tensor:
        """The new value of ``p`` after step ``t`` (1-based); ``state`` is updated."""
        lr = self.step_size(name)
        if self.rule(name) == "sgd":
            return p - lr * g
        b1, b2 = self.beta1, ADAM_BETAS[1]
        m, v = state[name]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[name] = (m, v)
        return adam_update(p, lr, m, v, 1 - b1**t, 1 - b2**t)

    def step_(self, name: str, p: torch.Tensor, g: torch.Tensor, m: torch.Tensor,
              v: torch.Tensor, bc1: torch.Tensor, bc2: torch.Tensor) -> torch.Tensor:
        """:meth:`step` on static buffers: ``m`` and ``v`` are updated in place, the bias
        corrections ``bc = 1 - beta^t`` are tensors; returns the new value (not written)."""
        lr = self.step_size(name)
        if self.rule(name) == "sgd":
            return p - lr * g
        b1, b2 = self.beta1, ADAM_BETAS[1]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        return adam_update(p, lr, m, v, bc1, bc2)
