"""The weight-sharing supernet ``f(x; theta, z)`` of a :class:`SearchSpace`.

Every edge ``e`` of a cell computes the mixed op ``sum_k z[e, k] * op_k(h)`` (DARTS' MixedOp),
with ``z = {"normal": Tensor[E, K], "reduce": Tensor[E, K]}`` any simplex (or non-negative)
weights: relaxed one-hot samples, softmax probabilities, or hard one-hot samples. An op whose
weight is exactly zero on an edge is not computed at all, so hard samples only run the selected
op per edge (GDAS-style) and the output is identical to computing it times zero; the gradient
w.r.t. a skipped op's weight is then 0 rather than ``<dL/dout, op_k(h)>``. Pass
``skip_zero=False`` for that gradient, or where data-dependent control flow is unwanted
(CUDA-graph capture).

CPU fast path (``cpu_fast=True``, the default): on a CPU the input is put in the channels-last
layout, which PyTorch's CPU convolutions (oneDNN) run several times faster for the depthwise
5x5 and dilated kernels of the DARTS ops, and strided dilated depthwise convolutions run on the
even pixels (:mod:`pyro_base.cpu_conv`). Outputs and gradients equal the plain
path to float rounding; other devices are unaffected. ``scripts/bench.py`` measures it.

The supernet knows nothing of Pyro. A Pyro site owns its weights through :class:`ParamSpec`:
``theta`` is one flat vector and :func:`functional_forward` runs the net with it.

Usage::

    space = SearchSpace.preset("cpu")
    net = SuperNet(space)
    spec = ParamSpec.from_module(net)
    theta = spec.flatten(dict(net.named_parameters()))         # [P]
    z = uniform_z(space)
    logits = functional_forward(net, spec, theta, x, z)      # == net(x, z)

Reference: Liu et al., "DARTS", ICLR 2019 (model_search.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from pyro_base.cpu_conv import (
    channels_last,
    channels_last_grad,
    in_functorch,
    is_channels_last,
    set_fast_path,
)
from pyro_base.ops import POOL_OPS, FactorizedReduce, ReLUConvBN, ReLUFirst, SepConv, make_op
from pyro_base.search_space import CELL_TYPES, SearchSpace


class MixedOp(nn.Module):
    """All ops of the space on one edge; ``forward(h, w, active, shared)`` sums ``w[k] * op_k(h)``.

    With ``fast`` on a CPU the same sum is computed with less memory traffic: ``relu(h)`` once
    for every op that starts with a ReLU, the ``none`` op (zero) left out of the sum unless it
    is the only term, and the products accumulated with ``addcmul``. Equal to the plain sum to
    float rounding (``0 * op(h)`` contributes nothing, and its gradient is zero either way).
    The parameter-free ops (pooling with a BatchNorm without affine weights or running
    statistics) give the same output on every edge that reads the same state: ``shared``
    holds them per state, so the cell computes them once.
    """

    fast: bool = True

    def __init__(self, ops: tuple[str, ...], C: int, stride: int, track: bool) -> None:
        super().__init__()
        layers = []
        for name in ops:
            op = make_op(name, C=C, stride=stride, affine=False, track=track)
            if name in POOL_OPS:  # DARTS adds a BN after pooling in search
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False, track_running_stats=track))
            layers.append(op)
        self.ops = nn.ModuleList(layers)
        self._zero = tuple(name == "none" for name in ops)
        self._shareable = tuple(name in POOL_OPS and not track for name in ops)

    def forward(self, h: torch.Tensor, w: torch.Tensor, active: list[int] | None,
                shared: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        ks = range(len(self.ops)) if active is None else active
        if not (self.fast and h.device.type == "cpu"):
            return sum(w[k] * self.ops[k](h) for k in ks)  # type: ignore[return-value]
        ks = [k for k in ks if not self._zero[k]] or list(ks)
        r, ys = None, []
        for k in ks:
            op = self.ops[k]
            if isinstance(op, ReLUFirst | SepConv | FactorizedReduce):
                r = channels_last_grad(torch.relu(h)) if r is None else r
                ys.append(op.after_relu(r))
            elif shared is not None and self._shareable[k]:
                if k not in shared:
                    shared[k] = op(h)
                ys.append(shared[k])
            else:
                ys.append(op(h))
        return weighted_sum(w, ks, ys)


class _WeightedSum(torch.autograd.Function):
    """``sum_i w[ks[i]] * ys[i]``; the backward gives ``w`` its gradient as one row
    (``<g, y_i>`` as dot products) instead of one ``select`` and one reduction per term."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, ks: tuple[int, ...],  # type: ignore[override]
                *ys: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w, *ys)
        ctx.ks = ks
        out = ys[0] * w[ks[0]]
        for k, y in zip(ks[1:], ys[1:], strict=True):
            out = torch.addcmul(out, y, w[k])
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[no-untyped-def,override]
        w, *ys = ctx.saved_tensors
        gw = None
        if ctx.needs_input_grad[0]:
            gw = torch.zeros_like(w).index_put((torch.tensor(ctx.ks),),
                                               torch.stack([_dot(g, y) for y in ys]))
        gys = [g * w[k] if need else None
               for k, need in zip(ctx.ks, ctx.needs_input_grad[2:], strict=True)]
        return (gw, None, *gys)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum()``; one BLAS dot product when both have the same dense layout."""
    if a.is_contiguous() and b.is_contiguous():
        return torch.dot(a.reshape(-1), b.reshape(-1))
    if a.ndim == 4 and is_channels_last(a) and is_channels_last(b):
        return torch.dot(a.permute(0, 2, 3, 1).reshape(-1), b.permute(0, 2, 3, 1).reshape(-1))
    return (a * b).sum()


def weighted_sum(w: torch.Tensor, ks: list[int], ys: list[torch.Tensor]) -> torch.Tensor:
    """``sum_i w[ks[i]] * ys[i]`` for the op outputs ``ys`` of one edge (same shape, same
    layout); a custom backward on a CPU, the plain sum elsewhere or inside ``torch.func``."""
    if w.device.type != "cpu" or in_functorch(w, *ys):
        return sum(w[k] * y for k, y in zip(ks, ys, strict=True))  # type: ignore[return-value]
    return _WeightedSum.apply(w, tuple(ks), *ys)


class SearchCell(nn.Module):
    """One cell of the supernet; ``fast``: node states hand their gradients back channels-last
    (:func:`~pyro_base.cpu_conv.channels_last_grad`), and the edges reading one state share
    its parameter-free ops (:class:`MixedOp`)."""

    fast: bool = True

    def __init__(self, space: SearchSpace, C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        track = space.track_running_stats
        self.reduction = reduction
        self.nodes = space.nodes
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_pp, C, affine=False, track=track)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False, track=track)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False, track=track)
        self.edges = nn.ModuleList(
            MixedOp(space.ops, C, 2 if reduction and j < 2 else 1, track)
            for _, j in space.edges()
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, z: torch.Tensor,
                active: list[list[int]] | None) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        if self.fast:
            states = [channels_last_grad(s) for s in states]
        shared: list[dict[int, torch.Tensor]] = [{} for _ in range(self.nodes + 2)]
        e = 0
        for i in range(self.nodes):
            terms = []
            for j in range(i + 2):
                act = None if active is None else active[e]
                if act is None or act:
                    terms.append(self.edges[e](states[j], z[e], act,
                                               shared[j] if self.fast else None))
                e += 1
            if terms:
                node = sum(terms)
                states.append(channels_last_grad(node) if self.fast else node)  # type: ignore[arg-type]
            else:  # every edge into this node is exactly zero
                states.append(_zeros_like_node(states, self.reduction))
        return torch.cat(states[2:], dim=1)


def _zeros_like_node(states: list[torch.Tensor], reduction: bool) -> torch.Tensor:
    ref = states[0]
    if reduction:
        h, w = (ref.shape[-2] + 1) // 2, (ref.shape[-1] + 1) // 2
        return ref.new_zeros(ref.shape[0], ref.shape[1], h, w)
    return torch.zeros_like(ref)


class SuperNet(nn.Module):
    """The DARTS search network for ``space``: ``forward(x, z) -> logits [B, n_classes]``."""

    def __init__(self, space: SearchSpace, *, skip_zero: bool = True,
                 cpu_fast: bool = True) -> None:
        super().__init__()
        self.space = space
        self.skip_zero = skip_zero
        self.cpu_fast = cpu_fast
        C = space.channels
        C_curr = space.stem_multiplier * C
        k = space.stem_kernel
        self.stem = nn.Sequential(
            nn.Conv2d(space.in_channels, C_curr, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(C_curr, track_running_stats=space.track_running_stats),
        )
        C_pp, C_p, C_curr = C_curr, C_curr, C
        cells, reduction_prev = [], False
        for i in range(space.cells):
            reduction = i in space.reductions  # type: ignore[operator]
            if reduction:
                C_curr *= 2
            cells.append(SearchCell(space, C_pp, C_p, C_curr, reduction, reduction_prev))
            reduction_prev = reduction
            C_pp, C_p = C_p, space.nodes * C_curr
        self.cells = nn.ModuleList(cells)
        self.classifier = nn.Linear(C_p, space.n_classes)
        set_fast_path(self, cpu_fast)

    def check_z(self, z: Mapping[str, torch.Tensor]) -> None:
        """Raise a ValueError unless ``z`` has an [E, K] tensor for every cell type used."""
        for cell in self.space.cell_types:
            if cell not in z:
                raise ValueError(f"z is missing cell type {cell!r}; expected keys "
                                 f"{list(self.space.cell_types)}")
            if tuple(z[cell].shape) != self.space.z_shape:
                raise ValueError(f"z[{cell!r}] must have shape {self.space.z_shape} "
                                 f"(edges, ops), got {tuple(z[cell].shape)}")

    def active_ops(self, z: Mapping[str, torch.Tensor]) -> dict[str, list[list[int]]] | None:
        """Per cell type and edge, the indices of ops with non-zero weight (one host sync)."""
        if not self.skip_zero:
            return None
        out = {}
        for cell in self.space.cell_types:
            nz = (z[cell].detach() != 0).cpu().tolist()
            out[cell] = [[k for k, on in enumerate(row) if on] for row in nz]
        return out

    def forward(self, x: torch.Tensor, z: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.check_z(z)
        if x.ndim != 4 or x.shape[1] != self.space.in_channels:
            raise ValueError(f"x must be [B, {self.space.in_channels}, H, W], got "
                             f"{tuple(x.shape)}")
        active = self.active_ops(z)
        if self.cpu_fast and x.device.type == "cpu":
            x = channels_last(x)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = CELL_TYPES[1] if cell.reduction else CELL_TYPES[0]
            s0, s1 = s1, cell(s0, s1, z[kind], None if active is None else active[kind])
        if self.cpu_fast:
            s1 = channels_last_grad(s1)
        out = nn.functional.adaptive_avg_pool2d(s1, 1).flatten(1)
        return self.classifier(out)


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes and offsets of a module's parameters inside one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamSpec:
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named))

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        return sum(self.numels)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"parameters missing from the mapping: {missing[:5]}")
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        if theta.shape[-1] != self.size:
            raise ValueError(f"theta must have {self.size} entries, got {theta.shape[-1]}")
        chunks = torch.split(theta, self.numels, dim=-1)
        return {n: c.reshape(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    def layer_slices(self) -> dict[str, slice]:
        """Offsets of each parameter tensor in theta (for per-layer summaries)."""
        out, start = {}, 0
        for n, k in zip(self.names, self.numels, strict=True):
            out[n] = slice(start, start + k)
            start += k
        return out


def functional_forward(net: SuperNet, spec: ParamSpec, theta: torch.Tensor, x: torch.Tensor,
                       z: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``net(x, z)`` with the weights taken from the flat vector ``theta``."""
    return functional_call(net, spec.unflatten(theta), (x, z))


def uniform_z(space: SearchSpace, *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Uniform op weights ``1/K`` on every edge of every cell type."""
    return {c: torch.full(space.z_shape, 1.0 / space.n_ops, device=device, dtype=dtype)
            for c in space.cell_types}
