"""The operation registry: DARTS primitives plus the extra ops of published cells.

Every entry of :data:`OPS` is a factory ``OPS[name](C, stride, affine, track) -> nn.Module``
mapping ``[B, C, H, W]`` to ``[B, C, H // stride, W // stride]``. ``affine`` is ``False`` in the
search supernet (as in DARTS) and ``track`` says whether BatchNorm keeps running statistics
(``False`` in search: batch statistics only, which is what ``torch.func`` transforms and
per-task adaptation need).

Usage::

    op = make_op("sep_conv_3x3", C=16, stride=2, affine=False)
    y = op(torch.randn(2, 16, 32, 32))   # [2, 16, 16, 16]

Reference: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(operations.py of the released code).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pyro_base.cpu_conv import (
    DepthwiseConv2d,
    PointwiseConv2d,
    is_channels_last,
    subsample,
)


def _bn(C: int, affine: bool, track: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(C, affine=affine, track_running_stats=track)


class ReLUFirst(nn.Sequential):
    """A ``Sequential`` whose first layer is a ReLU; ``after_relu(r)`` runs the rest.

    ``op(x) == op.after_relu(relu(x))``: a mixed op computes ``relu(h)`` once for all of its
    ops that start with one (the CPU fast path of :class:`~pyro_base.supernet.MixedOp`).
    """

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        for layer in list(self)[1:]:
            r = layer(r)
        return r


class ReLUConvBN(ReLUFirst):
    """ReLU -> Conv -> BN, the preprocessing block of a cell input."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True, track: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            PointwiseConv2d(C_in, C_out) if (kernel, stride, padding) == (1, 1, 0)
            else nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False),
            _bn(C_out, affine, track),
        )


class DilConv(ReLUFirst):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True, track: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C_in, kernel, stride=stride, padding=padding, dilation=dilation),
            PointwiseConv2d(C_in, C_out),
            _bn(C_out, affine, track),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks with dilation 1 (the DARTS separable convolution)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True, track: bool = True) -> None:
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine, track),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine, track),
        )

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        """``self(x) == self.after_relu(relu(x))``: the first block's ReLU is already applied."""
        return self[1](self[0].after_relu(r))


class Conv7x1_1x7(ReLUFirst):
    """ReLU -> 1x7 conv -> 7x1 conv -> BN (NASNet / AmoebaNet op)."""

    def __init__(self, C: int, stride: int, affine: bool = True, track: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            _bn(C, affine, track),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs, concatenated.

    ``fast`` (on a CPU, channels-last input): the stride-2 1x1 convolutions are matrix
    products of the even pixels ``x[2i, 2j]`` and of the odd ones ``x[2i + 1, 2j + 1]``
    (the same sums), and the input's gradient is handed back channels-last.
    """

    fast: bool = True

    def __init__(self, C_in: int, C_out: int, affine: bool = True, track: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = _bn(C_out, affine, track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(self.relu(x))

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        """``self(x) == self.after_relu(relu(x))``."""
        # Pad odd sizes so both branches see the same output grid.
        if r.shape[-1] % 2 or r.shape[-2] % 2:
            r = nn.functional.pad(r, (0, r.shape[-1] % 2, 0, r.shape[-2] % 2))
        if self.fast and r.device.type == "cpu" and is_channels_last(r):
            out = torch.cat([_pixels_linear(subsample(r, 0), self.conv_1.weight),
                             _pixels_linear(subsample(r, 1), self.conv_2.weight)], dim=1)
        else:
            out = torch.cat([self.conv_1(r), self.conv_2(r[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


def _pixels_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution of ``x`` as a matrix product over its channels-last view."""
    return nn.functional.linear(x.permute(0, 2, 3, 1), weight.flatten(1)).permute(0, 3, 1, 2)


OpFactory = Callable[[int, int, bool, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda C, s, a, t: Zero(s),
    "avg_pool_3x3": lambda C, s, a, t: nn.AvgPool2d(3, stride=s, padding=1,
                                                     count_include_pad=False),
    "max_pool_3x3": lambda C, s, a, t: nn.MaxPool2d(3, stride=s, padding=1),
    "skip_connect": lambda C, s, a, t: nn.Identity() if s == 1 else FactorizedReduce(C, C, a, t),
    "sep_conv_3x3": lambda C, s, a, t: SepConv(C, C, 3, s, 1, a, t),
    "sep_conv_5x5": lambda C, s, a, t: SepConv(C, C, 5, s, 2, a, t),
    "sep_conv_7x7": lambda C, s, a, t: SepConv(C, C, 7, s, 3, a, t),
    "dil_conv_3x3": lambda C, s, a, t: DilConv(C, C, 3, s, 2, 2, a, t),
    "dil_conv_5x5": lambda C, s, a, t: DilConv(C, C, 5, s, 4, 2, a, t),
    "conv_7x1_1x7": lambda C, s, a, t: Conv7x1_1x7(C, s, a, t),
}
"""Op name -> factory ``(C, stride, affine, track_running_stats) -> nn.Module``."""

DARTS_OPS: tuple[str, ...] = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
"""The eight primitives of the DARTS search space, in the DARTS order."""

POOL_OPS = frozenset({"max_pool_3x3", "avg_pool_3x3"})
PARAMETER_FREE_OPS = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})


def check_op(name: str) -> str:
    """Return ``name`` if it is a registered op, else raise a ValueError listing them."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; expected one of {sorted(OPS)}")
    return name


def make_op(name: str, *, C: int, stride: int, affine: bool = True,
            track: bool = True) -> nn.Module:
    """Build op ``name`` for ``C`` channels and ``stride`` (1, or 2 in reduction cells)."""
    check_op(name)
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    return OPS[name](C, stride, affine, track)
