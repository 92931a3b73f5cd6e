"""The discrete network built from a genotype, for training an architecture from scratch.

This is the evaluation network of DARTS (``NetworkCIFAR`` / ``NetworkImageNet`` of its
``model.py``) in one class: a stem, ``layers`` cells (reductions at ``layers // 3`` and
``2 * layers // 3`` double the channels and halve the resolution), global average pooling and a
linear classifier, plus an optional auxiliary head after cell ``2 * layers // 3``. Cell ``k``
computes, for each intermediate node ``i``,

    s_i = drop_path(op_a(s_{j_a})) + drop_path(op_b(s_{j_b}))

from the preprocessed outputs of cells ``k-2`` and ``k-1``; drop-path (probability
``model.drop_path_prob``, set by the training loop) skips identity ops and is active only in
training mode. Ops come from :mod:`pyro_base.ops` with ``affine=True`` and running BatchNorm
statistics.

Usage::

    net = Network(get_genotype("DARTS_V2"), C=36, n_classes=10, layers=20, auxiliary=True)
    net.drop_path_prob = 0.2
    logits, logits_aux = net(torch.randn(2, 3, 32, 32))   # logits_aux is None in eval mode
    count_parameters(net)                                 # 3.35 (millions, aux head excluded)
    count_macs(net, 32)

For deployment, :mod:`pyro_base.export` turns a trained network into a logits-only,
eval-mode module and a ``torch.export`` program.

Reference: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(``model.py`` of the released code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyro_base.cpu_conv import channels_last, channels_last_grad, set_fast_path
from pyro_base.genotype import Genotype
from pyro_base.ops import FactorizedReduce, ReLUConvBN, make_op

__all__ = ["Cell", "Network", "count_macs", "count_parameters", "drop_path"]

STEMS = ("cifar", "imagenet")


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, rescaling the rest (DARTS)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.bernoulli(torch.full((x.shape[0], 1, 1, 1), keep, device=x.device,
                                      dtype=x.dtype))
    return x / keep * mask


class Cell(nn.Module):
    """One discrete cell; ``forward(s0, s1, drop_prob)`` returns the concatenated nodes.

    ``fast``: on a CPU, the cell's states hand their gradients back channels-last
    (:func:`~pyro_base.cpu_conv.channels_last_grad`).
    """

    fast: bool = True

    def __init__(self, genotype: Genotype, *, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        cell = "reduce" if reduction else "normal"
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        pairs = genotype.cell(cell)
        self._indices = tuple(j for _, j in pairs)
        self._concat = genotype.concat(cell)
        self.multiplier = len(self._concat)
        self._ops = nn.ModuleList(
            make_op(op, C=C, stride=2 if reduction and j < 2 else 1) for op, j in pairs
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        keep = channels_last_grad if self.fast else (lambda t: t)
        states = [keep(self.preprocess0(s0)), keep(self.preprocess1(s1))]
        for i in range(len(self._ops) // 2):
            total = 0
            for p in (2 * i, 2 * i + 1):
                op = self._ops[p]
                h = op(states[self._indices[p]])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(keep(total))
        return torch.cat([states[i] for i in self._concat], dim=1)


class _AuxPool(nn.Module):
    """DARTS' fixed average pool when it yields the 2x2 map the head expects, else adaptive."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) >= self.kernel and all((s - self.kernel) // self.stride + 1 == 2
                                            for s in (h, w)):
            return F.avg_pool2d(x, self.kernel, self.stride, count_include_pad=False)
        return F.adaptive_avg_pool2d(x, 2)


class AuxiliaryHead(nn.Sequential):
    """Auxiliary classifier; ``stem="cifar"``: DARTS' AuxiliaryHeadCIFAR (8x8 maps),
    ``"imagenet"``: AuxiliaryHeadImageNet (7x7 maps; no BatchNorm after the 2x2 conv, as in the
    DARTS experiments). Other map sizes are pooled adaptively to 2x2."""

    def __init__(self, C: int, n_classes: int, *, stem: str = "cifar") -> None:
        kernel_stride = (5, 3) if stem == "cifar" else (5, 2)
        last_bn = [nn.BatchNorm2d(768)] if stem == "cifar" else []
        super().__init__(
            nn.ReLU(inplace=False),
            _AuxPool(*kernel_stride),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            *last_bn,
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(768, n_classes),
        )


class Network(nn.Module):
    """DARTS evaluation network from ``genotype``.

    :param genotype: the two cells.
    :param C: initial channels (36 for DARTS CIFAR-10, 48 for ImageNet).
    :param n_classes: classifier outputs.
    :param layers: number of cells (20 for CIFAR-10, 14 for ImageNet).
    :param auxiliary: add the auxiliary head after cell ``2 * layers // 3``.
    :param stem: ``"cifar"`` (3x3 conv to ``3 C``) or ``"imagenet"`` (two stride-2 stems,
        /8 resolution).
    :param in_channels: image channels.
    :param reductions: reduction cell indices (default DARTS' ``layers // 3``,
        ``2 * layers // 3``); the auxiliary head follows the last one.
    :param cpu_fast: on a CPU, run in the channels-last layout with the fast depthwise and
        pointwise convolutions of :mod:`pyro_base.cpu_conv` (equal outputs to float rounding).

    ``forward(x)`` returns ``(logits, logits_aux)``, ``logits_aux`` being None unless
    ``auxiliary`` and in training mode. Set ``drop_path_prob`` from the training loop.
    :class:`pyro_base.export.InferenceNetwork` wraps a copy returning the logits alone (for
    ``torch.export`` / ``torch.jit.trace``).
    """

    def __init__(self, genotype: Genotype, *, C: int, n_classes: int, layers: int,
                 auxiliary: bool = False, stem: str = "cifar", in_channels: int = 3,
                 reductions: Sequence[int] | None = None, cpu_fast: bool = True) -> None:
        super().__init__()
        if not isinstance(genotype, Genotype):
            raise ValueError(f"genotype must be a Genotype, got {type(genotype).__name__}")
        for name, value in (("C", C), ("n_classes", n_classes), ("layers", layers),
                            ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if stem == "imagenet" and C % 2:
            raise ValueError(f"the imagenet stem needs an even C, got {C}")
        if reductions is None:
            reductions = sorted({layers // 3, 2 * layers // 3})
        reductions = tuple(int(r) for r in reductions)
        for r in reductions:
            if not 0 <= r < layers:
                raise ValueError(f"reduction index {r} outside [0, {layers})")
        self.genotype, self.stem_type, self.in_channels = genotype, stem, in_channels
        self.layers, self.reductions, self.drop_path_prob = layers, reductions, 0.0
        self._aux_index = max(reductions) if reductions else 2 * layers // 3

        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * C, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(3 * C))
            C_prev_prev = C_prev = 3 * C
            reduction_prev = False
        else:
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C // 2), nn.ReLU(inplace=False),
                nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False),
                                       nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(C))
            C_prev_prev = C_prev = C
            reduction_prev = True

        self.cells = nn.ModuleList()
        C_curr, C_aux = C, C_prev
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev=C_prev_prev, C_prev=C_prev, C=C_curr,
                        reduction=reduction, reduction_prev=reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self._aux_index:
                C_aux = C_prev
        self.auxiliary_head = AuxiliaryHead(C_aux, n_classes, stem=stem) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, n_classes)
        self.cpu_fast = cpu_fast
        set_fast_path(self, cpu_fast)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input has shape {tuple(x.shape)}; expected "
                             f"[B, {self.in_channels}, H, W]")
        if self.cpu_fast and x.device.type == "cpu":
            x = channels_last(x)
        if self.stem_type == "cifar":
            s0 = s1 = self.stem(x)
        else:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        if self.cpu_fast:
            s1 = channels_last_grad(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> float:
    """Parameters in millions; like DARTS' ``count_parameters_in_MB``, the auxiliary head is
    left out by default."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not (exclude_auxiliary and "auxiliary" in name)) / 1e6


def count_macs(model: nn.Module, input_size: int | tuple[int, int], *,
               in_channels: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image, in eval mode (so no auxiliary
    head), counted by forward hooks on every ``Conv2d`` and ``Linear``."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    c = in_channels if in_channels is not None else getattr(model, "in_channels", 3)
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out[0].numel() * k

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.in_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            x = torch.zeros(1, c, h, w, device=param.device if param is not None else "cpu")
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
