"""Estimate a meta-training run's memory before allocating anything, and refuse what cannot fit.

The supernet's activation memory dominates: every edge runs every op, and autograd keeps their
outputs for the backward pass. :func:`estimate_memory` runs one forward pass of the
:class:`~pyro_base.supernet.SuperNet` on PyTorch's ``meta`` device (shapes only, no data, no
memory) and sums the bytes of the outputs of every leaf module; that is close to what autograd
saves (conv inputs, BN inputs, ReLU outputs). Parameter memory counts the copies the engine
holds per weight: ``W`` (mean and scale), the adapted posterior, its gradients, the inner Adam
state and the meta-gradient. :func:`check_fits` compares the estimate with the free memory of
the device (``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of ``/proc/meminfo`` on CPU)
and raises :class:`InsufficientMemoryError` naming the estimate and the knobs to turn.

Usage::

    est = estimate_memory(SearchSpace.preset("darts"), batch_size=64)
    print(est)                      # "MemoryEstimate(activations 1.2 GiB, ...)"
    check_fits(est, torch.device("cuda"))
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet, uniform_z

log = logging.getLogger(__name__)

#: Copies of every weight held during meta-training: W (mu, sigma), the adapted posterior
#: (mean, scale), their gradients (2), the inner Adam state (4) and the meta-gradient (2).
PARAM_COPIES = 12
#: Fraction of the free memory a run may plan to use (allocator slack, data, workspace).
HEADROOM = 0.9
KNOBS = ("--inner-batch (the support minibatch per inner step)",
         "--channels (supernet width)", "--cells (supernet depth)", "--nodes (nodes per cell)",
         "--relaxation straight_through (one op per edge in the forward pass)",
         "--mode reptile or --inner-grad first (MAML second order keeps every inner step)")


class InsufficientMemoryError(MemoryError):
    """The estimated memory of a run exceeds what the device has free."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run is expected to need; ``total = activations + parameters``."""

    activations: int
    parameters: int
    n_weights: int
    batch_size: int
    unrolled_steps: int = 1

    @property
    def total(self) -> int:
        return self.activations + self.parameters

    def __str__(self) -> str:
        return (f"MemoryEstimate(total {_gib(self.total)}: activations {_gib(self.activations)} "
                f"for batch {self.batch_size} x {self.unrolled_steps} unrolled step(s), "
                f"parameters {_gib(self.parameters)} for {self.n_weights} weights x "
                f"{PARAM_COPIES} copies)")


def estimate_memory(space: SearchSpace, batch_size: int, *, dtype: torch.dtype = torch.float32,
                    unrolled_steps: int = 1, straight_through: bool = False) -> MemoryEstimate:
    """Estimate the memory of one inner step of the supernet for ``space`` and a batch.

    :param batch_size: images per forward pass (the support minibatch, ``--inner-batch``).
    :param unrolled_steps: forward passes whose activations are alive at once (MAML second
        order keeps all ``inner_steps``; Reptile and first order: 1).
    :param straight_through: one op per edge in the forward pass (hard samples skip the
        zero-weight ops), else every op of every edge runs.
    """
    if batch_size < 1 or unrolled_steps < 1:
        raise ValueError(f"batch_size and unrolled_steps must be >= 1, got {batch_size}, "
                         f"{unrolled_steps}")
    with torch.device("meta"):
        net = SuperNet(space, skip_zero=False).to(dtype)
    per_leaf: dict[str, int] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            outs = output if isinstance(output, tuple | list) else (output,)
            per_leaf[name] = per_leaf.get(name, 0) + sum(
                t.numel() * t.element_size() for t in outs if isinstance(t, torch.Tensor))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in net.named_modules()
               if not list(m.children())]
    try:
        x = torch.empty(batch_size, space.in_channels, space.input_size, space.input_size,
                        device="meta", dtype=dtype)
        net(x, uniform_z(space, device="meta", dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    act = _straight_through_bytes(per_leaf) if straight_through else sum(per_leaf.values())
    n_weights = sum(p.numel() for p in net.parameters())
    bytes_per = torch.empty((), dtype=dtype, device="meta").element_size()
    return MemoryEstimate(activations=act * unrolled_steps,
                          parameters=n_weights * PARAM_COPIES * bytes_per, n_weights=n_weights,
                          batch_size=batch_size, unrolled_steps=unrolled_steps)


def _straight_through_bytes(per_leaf: dict[str, int]) -> int:
    """Activations when one op per edge runs: the largest op of every edge, plus the rest."""
    edges: dict[str, dict[str, int]] = {}
    rest = 0
    for name, nbytes in per_leaf.items():
        m = re.match(r"(cells\.\d+\.edges\.\d+)\.ops\.(\d+)", name)
        if m is None:
            rest += nbytes
        else:
            ops = edges.setdefault(m.group(1), {})
            ops[m.group(2)] = ops.get(m.group(2), 0) + nbytes
    return rest + sum(max(ops.values()) for ops in edges.values())


def available_memory(device: torch.device | str) -> int | None:
    """Free bytes on ``device``; ``None`` when unknown (then nothing is checked)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_fits(estimate: MemoryEstimate, device: torch.device | str, *,
               available: int | None = None) -> None:
    """Raise :class:`InsufficientMemoryError` if ``estimate`` exceeds the device's free memory.

    :param available: free bytes, overriding the measurement (for tests and planning).
    """
    device = torch.device(device)
    free = available_memory(device) if available is None else available
    if free is None:
        log.warning("cannot measure free memory on %s; not checking %s", device, estimate)
        return
    if estimate.total > HEADROOM * free:
        knobs = "\n  ".join(KNOBS)
        raise InsufficientMemoryError(
            f"this run needs about {_gib(estimate.total)} on {device} but only {_gib(free)} is "
            f"free ({estimate}). Reduce one of:\n  {knobs}")
    log.info("memory: %s of %s free on %s", estimate, _gib(free), device)
