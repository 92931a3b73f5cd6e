"""Export a trained genotype network for deployment: logits only, eval mode, stock kernels.

:class:`~pyro_base.network.Network` returns ``(logits, logits_aux)`` (``logits_aux`` None in
eval mode), a tuple that ``torch.export`` and ``torch.jit.trace`` do not turn into a plain
inference graph. :class:`InferenceNetwork` is a frozen copy of a network for inference:

* ``forward(x)`` returns the logits ``[B, n_classes]`` alone;
* the auxiliary head is dropped (it is not in the copy, so not in any exported graph or
  state dict);
* it stays in eval mode (BatchNorm uses its running statistics; ``train()`` is a no-op) and
  its parameters do not require gradients;
* the CPU fast path of :mod:`pyro_base.cpu_conv` (channels-last layout, per-shape kernel
  choices, a custom autograd Function) is switched off, so the graph holds the stock
  convolutions only and runs on any device and memory layout. Outputs equal the network's to
  float rounding.

The network passed in is not changed (it keeps its mode, fast path and auxiliary head); later
training of it does not reach the copy.

:func:`export_network` runs ``torch.export.export`` on that copy, with a dynamic batch size by
default; :func:`save_exported` / :func:`load_exported` store an exported program in a ``.pt2``
file (``torch.export.save`` / ``torch.export.load``). ``torch.jit.trace`` also takes the
wrapper (``torch.jit`` is deprecated in recent PyTorch; a trace keeps the Python branches taken
for its example's shape, such as the padding of odd sizes, so trace at the served image size).

Usage::

    net = Network(get_genotype("DARTS_V2"), C=36, n_classes=10, layers=20, auxiliary=True)
    ...                                              # train it
    program = export_network(net, torch.randn(2, 3, 32, 32))
    save_exported(program, "darts_v2.pt2")
    model = load_exported("darts_v2.pt2").module()   # an nn.Module: images -> logits
    logits = model(images)                           # any batch size, 3x32x32 images

    traced = torch.jit.trace(InferenceNetwork(net), torch.randn(8, 3, 32, 32))
"""

from __future__ import annotations

import copy
import os
from typing import IO

import torch
from torch import nn

from pyro_base.cpu_conv import set_fast_path
from pyro_base.network import Network

__all__ = ["InferenceNetwork", "export_network", "load_exported", "save_exported"]


class InferenceNetwork(nn.Module):
    """A frozen inference copy of ``net``: ``forward(x)`` returns the eval-mode logits.

    :param net: the trained network (on any device); it is deep-copied, not changed.

    The copy has no auxiliary head, runs the stock convolutions (no CPU fast path), is always
    in eval mode and does not require gradients; ``self.net`` is that copy.
    """

    def __init__(self, net: Network) -> None:
        super().__init__()
        if not isinstance(net, Network):
            raise ValueError(f"net must be a Network, got {type(net).__name__}")
        # Copy without the auxiliary head: nothing of it reaches the exported program.
        frozen = copy.deepcopy(net, memo={id(net.auxiliary_head): None})
        frozen.auxiliary_head = None
        frozen.cpu_fast = False
        set_fast_path(frozen, False)
        frozen.zero_grad(set_to_none=True)
        frozen.requires_grad_(False)
        self.net = frozen
        self.in_channels = net.in_channels
        super().train(False)

    def train(self, mode: bool = True) -> InferenceNetwork:
        """Always eval mode: an inference network never uses batch statistics or drop-path."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.net(x)
        return logits


def export_network(net: Network | InferenceNetwork, example: torch.Tensor, *,
                   dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of :class:`InferenceNetwork` ``(net)``: images -> logits.

    :param net: a trained network (wrapped in an :class:`InferenceNetwork` copy, so not
        changed), or an :class:`InferenceNetwork`.
    :param example: an input batch ``[B, in_channels, H, W]`` on the network's device; only
        its shape, dtype and device matter. The program is specialised to its channels and
        ``H x W`` (other sizes fail a shape check when called).
    :param dynamic_batch: export the batch size as a dynamic dimension (the program then takes
        any batch size); an example with ``B = 1`` is repeated to ``B = 2`` for tracing, since
        export would otherwise fix a batch of 1. ``False``: the program takes batches of ``B``
        only.

    ``program.module()`` is an ``nn.Module`` computing the logits; ``program.graph`` is the
    ATen graph.
    """
    module = net if isinstance(net, InferenceNetwork) else InferenceNetwork(net)
    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example)
        raise ValueError(f"example must be a [B, C, H, W] tensor, got {shape}")
    dynamic_shapes = None
    if dynamic_batch:
        if example.shape[0] == 1:
            example = torch.cat([example, example])
        dynamic_shapes = {"x": {0: torch.export.Dim("batch")}}
    return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)


def save_exported(program: torch.export.ExportedProgram,
                  path: str | os.PathLike[str] | IO[bytes]) -> None:
    """Write ``program`` to ``path`` (a ``.pt2`` archive, ``torch.export.save``)."""
    torch.export.save(program, path)


def load_exported(path: str | os.PathLike[str] | IO[bytes]) -> torch.export.ExportedProgram:
    """Read a program written by :func:`save_exported`; ``.module()`` runs it."""
    return torch.export.load(path)
