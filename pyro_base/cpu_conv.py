"""Convolutions with a CPU fast path: the same parameters as ``nn.Conv2d``, faster kernels.

PyTorch's CPU convolutions (oneDNN) are slow for the small depthwise and pointwise
convolutions of the DARTS ops in the default (NCHW) layout; measured on one core, forward +
backward, batch 32, 16x16, C=8: depthwise 5x5 3.8 ms (NCHW) vs 1.1 ms (channels-last), dilated
5x5 6.9 vs 1.5 ms, pointwise 0.79 ms (NCHW conv) vs 0.38 ms (channels-last conv) vs 0.21 ms
(a matrix product over the channels-last view). The supernet therefore runs in the
channels-last layout on a CPU, and these modules pick, per call, the fastest exact way:

* :class:`DepthwiseConv2d` (``groups = C``):

  - stride 2, dilation 2, even padding ``p``: an undilated convolution of the even pixels,
    ``out[i] = sum_k w[k] x[2i + 2k - p] = sum_k w[k] x_even[i + k - p/2]`` (a quarter of the
    work; the stock strided dilated kernel is slowest of all in channels-last);
  - stride 1, dilation 2, a kernel reaching past the image (e.g. 5x5 on 8x8): the four
    polyphase sub-images ``x[a::2, b::2]`` as a batch of undilated convolutions (dilation 2
    never mixes pixels of different parities);
  - otherwise the stock kernel.

* :class:`PointwiseConv2d` (1x1, stride 1): on a channels-last input, ``x @ W^T`` over the
  channel axis.

Each path is the same sum in another order: outputs and gradients equal the stock modules' to
float rounding (tested in float64). ``fast = False`` (or a non-CPU device) runs ``nn.Conv2d``
unchanged; :func:`set_fast_path` switches a whole network.

Usage::

    conv = DepthwiseConv2d(16, 5, stride=1, padding=4, dilation=2)
    y = conv(x.contiguous(memory_format=torch.channels_last))
    set_fast_path(net, False)          # the stock kernels, e.g. for a reference timing
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthwiseConv2d", "PointwiseConv2d", "channels_last", "channels_last_grad",
           "in_functorch", "is_channels_last", "set_fast_path",
           "subsample"]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels-last layout; unchanged inside ``torch.func.vmap`` (which keeps
    the layout it was given: it cannot copy into channels-last)."""
    try:
        return x.contiguous(memory_format=torch.channels_last)
    except RuntimeError:
        return x


class _ChannelsLastGrad(torch.autograd.Function):
    """The identity; its backward hands on the gradient in the channels-last layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return channels_last(g)


def channels_last_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged; the gradient flowing back through it is made channels-last.

    Gradients that reach a channels-last activation in the default layout (from a global
    pool, or as a channel slice of a concatenation's gradient) make every elementwise backward
    kernel that meets them with a channels-last saved tensor take PyTorch's slow mixed-stride
    path (measured: ReLU's backward 847 us against 23 us, [32, 16, 16, 16], one thread).
    Inside ``torch.func`` transforms and off the CPU it is the plain identity.
    """
    if (x.device.type != "cpu" or not x.requires_grad or in_functorch(x)
            or not is_channels_last(x)):
        return x
    return _ChannelsLastGrad.apply(x)


class _Subsample(torch.autograd.Function):
    """``x[:, :, o::2, o::2]`` as a channels-last tensor; the gradient is scattered back into a
    channels-last zero tensor (autograd's own slice backward allocates the default layout,
    which then meets channels-last gradients on the slow mixed-stride path)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, offset: int) -> torch.Tensor:  # type: ignore[override]
        ctx.shape, ctx.offset = x.shape, offset
        return channels_last(x[:, :, offset::2, offset::2])

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[no-untyped-def,override]
        o = ctx.offset
        gx = g.new_zeros(ctx.shape).contiguous(memory_format=torch.channels_last)
        gx[:, :, o::2, o::2] = g
        return gx, None


def subsample(x: torch.Tensor, offset: int) -> torch.Tensor:
    """The pixels ``x[:, :, offset::2, offset::2]``, channels-last on a channels-last CPU
    input (the same values; its gradient keeps the layout); a plain slice otherwise (and
    inside ``torch.func`` transforms)."""
    if x.device.type != "cpu" or in_functorch(x) or not is_channels_last(x):
        return x[:, :, offset::2, offset::2]
    return _Subsample.apply(x, offset)


def in_functorch(*tensors: torch.Tensor) -> bool:
    """Whether any of ``tensors`` is wrapped by a ``torch.func`` transform (``vmap``, ``grad``),
    where the custom autograd functions here (without ``setup_context``) cannot run."""
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is channels-last contiguous; False inside ``vmap`` (which cannot say)."""
    try:
        return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:
        return False


def _fast_here(module: nn.Module, x: torch.Tensor) -> bool:
    return bool(getattr(module, "fast", False)) and x.device.type == "cpu"


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C, C, kernel, groups=C, bias=False)`` with the CPU paths above."""

    fast: bool = True

    def __init__(self, C: int, kernel: int, *, stride: int, padding: int,
                 dilation: int = 1) -> None:
        super().__init__(C, C, kernel, stride=stride, padding=padding, dilation=dilation,
                         groups=C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = self._path(x) if _fast_here(self, x) else "stock"
        if path == "same" and in_functorch(x, self.weight):
            path = "stock"  # the same kernel; the custom backward cannot run in torch.func
        p, d = self.padding[0], self.dilation[0]
        if path == "same":
            return _SameDepthwise.apply(x, self.weight, p, d)
        if path == "stock":
            return super().forward(x)
        if path == "even":
            return F.conv2d(subsample(x, 0), self.weight, None, 1, p // 2, 1, self.groups)
        B, C, H, W = x.shape
        x = channels_last_grad(x)  # the permutes' backward would hand back the default layout
        phases = (x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 3, 5, 1, 2, 4)
                  .reshape(B * 4, C, H // 2, W // 2))
        y = F.conv2d(channels_last(phases), self.weight, None, 1, p // 2, 1, self.groups)
        return channels_last(y.reshape(B, 2, 2, C, H // 2, W // 2).permute(0, 3, 4, 1, 5, 2)
                             .reshape(B, C, H, W))

    def _path(self, x: torch.Tensor) -> str:
        """``"even"``, ``"phases"``, ``"same"`` or ``"stock"`` for this input."""
        k, s, d, p = self.kernel_size, self.stride, self.dilation, self.padding
        if not (k[0] == k[1] and s[0] == s[1] and d[0] == d[1] and p[0] == p[1]):
            return "stock"
        k, s, d, p = k[0], s[0], d[0], p[0]
        H, W = x.shape[-2:]
        if d == 2 and p % 2 == 0:
            if s == 2:
                return "even"
            if s == 1 and p == k - 1 and H % 2 == 0 and W % 2 == 0 and 2 * k - 1 > min(H, W):
                return "phases"
        if s == 1 and 2 * p == d * (k - 1) and is_channels_last(x):
            return "same"
        return "stock"


class _SameDepthwise(torch.autograd.Function):
    """A stride-1 "same" depthwise convolution whose input gradient is itself a depthwise
    convolution (with the flipped kernel), ``dL/dx = conv(dL/dy, flip(w))``: 3-4x faster than
    oneDNN's backward kernel on a CPU. The weight gradient is PyTorch's. Differentiable twice
    (the backward is made of differentiable ops)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, padding: int,  # type: ignore[override]
                dilation: int) -> torch.Tensor:
        # the (ctx, ...) form: with a separate setup_context, every apply() binds the
        # signature with inspect, ~12 us a call
        ctx.save_for_backward(x, w)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, w, None, 1, padding, dilation, w.shape[0])

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[no-untyped-def,override]
        x, w = ctx.saved_tensors
        p, d, C = ctx.padding, ctx.dilation, w.shape[0]
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = F.conv2d(g, w.flip(-1, -2), None, 1, p, d, C)
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(
                g, x, w, None, [1, 1], [p, p], [d, d], False, [0, 0], C,
                [False, True, False])[1]
        return gx, gw, None, None


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C_in, C_out, 1, bias=False)``; a matrix product on channels-last input."""

    fast: bool = True

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__(C_in, C_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast_here(self, x) and x.shape[1] > 1 and is_channels_last(x):
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1))
            return y.permute(0, 3, 1, 2)
        return super().forward(x)


def set_fast_path(module: nn.Module, enabled: bool) -> None:
    """Turn the CPU fast path of every module inside ``module`` that has one on or off.

    A module has one when its class defines a ``fast`` attribute (these convolutions, and the
    supernet's mixed op).
    """
    for m in module.modules():
        if hasattr(type(m), "fast"):
            m.fast = enabled
