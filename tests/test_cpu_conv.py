"""The CPU fast path (channels-last layout, fast depthwise / pointwise convolutions, the mixed
op's shared ReLU): outputs and gradients equal the stock path's to float rounding (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_base.cpu_conv import (
    DepthwiseConv2d,
    PointwiseConv2d,
    channels_last,
    channels_last_grad,
    set_fast_path,
    subsample,
)
from pyro_base.genotype import get_genotype
from pyro_base.network import Network
from pyro_base.ops import DARTS_OPS, FactorizedReduce
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import ParamSpec, SuperNet, functional_forward, weighted_sum

TOL = dict(rtol=1e-9, atol=1e-11)


def _grads(fn, *tensors):
    """Output of ``fn`` and the gradients of a fixed random projection of it."""
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*tensors)
    g = torch.Generator().manual_seed(7)
    proj = torch.randn(out.shape, generator=g, dtype=out.dtype)
    (out * proj).sum().backward()
    return out.detach(), [t.grad for t in tensors]


@pytest.mark.parametrize("kernel,dilation,stride,size",
                         [(k, d, s, n) for k in (3, 5) for d in (1, 2) for s in (1, 2)
                          for n in (7, 8, 16)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_depthwise_paths_equal_stock(kernel, dilation, stride, size, layout):
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, kernel, stride=stride, padding=dilation * (kernel - 1) // 2,
                           dilation=dilation).double()
    x = torch.randn(3, 6, size, size, dtype=torch.float64)
    if layout == "channels_last":
        x = channels_last(x)
    fast = _grads(lambda x, w: torch.func.functional_call(conv, {"weight": w}, (x,)),
                  x, conv.weight)
    ref = _grads(lambda x, w: F.conv2d(x, w, None, stride, conv.padding, dilation, 6),
                 x, conv.weight)
    assert fast[0].shape == ref[0].shape
    torch.testing.assert_close(fast[0], ref[0], **TOL)
    for a, b in zip(fast[1], ref[1], strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_depthwise_takes_the_measured_paths():
    x16, x8 = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 8, 8)
    conv = lambda k, d, s: DepthwiseConv2d(4, k, stride=s, padding=d * (k - 1) // 2,  # noqa: E731
                                           dilation=d)
    assert conv(5, 2, 2)._path(x16) == "even"          # strided dilated: even pixels
    assert conv(5, 2, 1)._path(x8) == "phases"          # 9-pixel reach on an 8x8 image
    assert conv(5, 2, 1)._path(x16) == "stock"
    assert conv(3, 2, 1)._path(x8) == "stock"
    assert conv(5, 1, 1)._path(x8) == "stock"
    assert conv(5, 2, 1)._path(torch.randn(2, 4, 7, 7)) == "stock"  # odd: no phases


def test_pointwise_equals_stock_and_keeps_channels_last():
    torch.manual_seed(1)
    conv = PointwiseConv2d(5, 7).double()
    x = channels_last(torch.randn(3, 5, 6, 6, dtype=torch.float64))
    y = conv(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    fast = _grads(lambda x, w: torch.func.functional_call(conv, {"weight": w}, (x,)),
                  x, conv.weight)
    ref = _grads(lambda x, w: F.conv2d(x, w), x, conv.weight)
    torch.testing.assert_close(fast[0], ref[0], **TOL)
    for a, b in zip(fast[1], ref[1], strict=True):
        torch.testing.assert_close(a, b, **TOL)


def _space(size: int) -> SearchSpace:
    return SearchSpace(ops=DARTS_OPS, nodes=2, cells=3, reductions=(1, 2), channels=4,
                       stem_kernel=1, stem_multiplier=2, input_size=size, n_classes=5)


def _z(space, kind, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for c in space.cell_types:
        if kind == "relaxed":
            out[c] = torch.randn(space.z_shape, generator=g, dtype=torch.float64).softmax(-1)
        else:  # hard, with the 'none' op alone on the first edge
            idx = torch.randint(0, space.n_ops, (space.n_edges,), generator=g)
            idx[0] = DARTS_OPS.index("none")
            out[c] = F.one_hot(idx, space.n_ops).double()
    return out


@pytest.mark.parametrize("kind", ["relaxed", "hard"])
@pytest.mark.parametrize("size", [16, 12])
def test_supernet_fast_path_equals_stock(kind, size):
    """Logits and the gradients w.r.t. the flat theta and z: 16x16 reaches the 8x8 and 4x4
    phases path; 12x12 the odd 3x3 maps of the last cell."""
    space = _space(size)
    torch.manual_seed(0)
    fast = SuperNet(space, cpu_fast=True).double()
    stock = SuperNet(space, cpu_fast=False).double()
    stock.load_state_dict(fast.state_dict())
    spec = ParamSpec.from_module(fast)
    theta = spec.flatten(dict(fast.named_parameters())).detach()
    x = torch.randn(6, 3, size, size, dtype=torch.float64)
    z = _z(space, kind, 3)
    names = list(z)

    def run(net):
        return _grads(lambda t, *zs: functional_forward(net, spec, t, x,
                                                        dict(zip(names, zs, strict=True))),
                      theta, *z.values())

    (out_f, g_f), (out_s, g_s) = run(fast), run(stock)
    torch.testing.assert_close(out_f, out_s, **TOL)
    for a, b in zip(g_f, g_s, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_vmap_over_tasks_keeps_working():
    """Inside ``torch.func.vmap`` the layout cannot be changed: the fast path still runs."""
    space = _space(16)
    torch.manual_seed(0)
    net = SuperNet(space, skip_zero=False)
    spec = ParamSpec.from_module(net)
    theta = spec.flatten(dict(net.named_parameters())).detach()
    x = torch.randn(2, 4, 3, 16, 16)
    z = {c: torch.full(space.z_shape, 1 / space.n_ops) for c in space.cell_types}
    batched = torch.func.vmap(lambda xx: functional_forward(net, spec, theta, xx, z),
                              randomness="different")(x)
    for i in range(2):
        torch.testing.assert_close(batched[i], functional_forward(net, spec, theta, x[i], z),
                                   rtol=1e-4, atol=1e-5)


def test_network_fast_path_equals_stock():
    torch.manual_seed(0)
    fast = Network(get_genotype("DARTS_V2"), C=4, n_classes=3, layers=3).double()
    stock = Network(get_genotype("DARTS_V2"), C=4, n_classes=3, layers=3,
                    cpu_fast=False).double()
    stock.load_state_dict(fast.state_dict())
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    params = dict(fast.named_parameters())
    names = list(params)

    def run(net):
        return _grads(lambda *ps: torch.func.functional_call(
            net, dict(zip(names, ps, strict=True)), (x,))[0], *params.values())

    (out_f, g_f), (out_s, g_s) = run(fast), run(stock)
    torch.testing.assert_close(out_f, out_s, **TOL)
    for a, b in zip(g_f, g_s, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_set_fast_path_switches_every_module():
    net = SuperNet(_space(16))
    set_fast_path(net, False)
    flags = [m.fast for m in net.modules() if hasattr(type(m), "fast")]
    assert flags and not any(flags)
    set_fast_path(net, True)
    assert all(m.fast for m in net.modules() if hasattr(type(m), "fast"))


@pytest.mark.parametrize("dilation", [1, 2])
def test_same_depthwise_is_twice_differentiable(dilation):
    """The custom backward is made of differentiable ops: second-order MAML works through it."""
    torch.manual_seed(2)
    conv = DepthwiseConv2d(3, 3, stride=1, padding=dilation, dilation=dilation).double()
    x = channels_last(torch.randn(2, 3, 6, 6, dtype=torch.float64)).requires_grad_()
    w = conv.weight.detach().clone().requires_grad_()
    assert conv._path(x) == "same"
    fn = lambda x, w: torch.func.functional_call(conv, {"weight": w}, (x,))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("offset", [0, 1])
def test_subsample_picks_the_pixels_and_keeps_the_layout(offset):
    """``subsample`` is ``x[:, :, o::2, o::2]``; its gradient is the scatter back, and it and
    the forward stay channels-last; twice differentiable (second-order MAML)."""
    torch.manual_seed(3)
    x = channels_last(torch.randn(2, 3, 6, 6, dtype=torch.float64)).requires_grad_()
    y = subsample(x, offset)
    assert torch.equal(y, x[:, :, offset::2, offset::2])
    assert y.is_contiguous(memory_format=torch.channels_last)
    g = channels_last(torch.randn(y.shape, dtype=torch.float64))
    (gx,) = torch.autograd.grad(y, x, g)
    expected = torch.zeros_like(x)
    expected[:, :, offset::2, offset::2] = g
    assert torch.equal(gx, expected)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    fn = lambda x: subsample(x, offset)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    plain = torch.randn(2, 3, 6, 6)  # the default layout: a plain slice
    assert torch.equal(subsample(plain, offset), plain[:, :, offset::2, offset::2])


def test_channels_last_grad_is_the_identity_with_a_channels_last_gradient():
    x = channels_last(torch.randn(2, 3, 5, 5, dtype=torch.float64)).requires_grad_()
    y = channels_last_grad(x)
    assert torch.equal(y, x)
    g = torch.randn(y.shape, dtype=torch.float64)  # the default layout
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(gx, g) and gx.is_contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradgradcheck(channels_last_grad, (x,))
    plain = torch.randn(2, 3, 5, 5, requires_grad=True)
    assert channels_last_grad(plain) is plain  # nothing to keep


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_fast_equals_stock(size):
    """Even and odd pixels as matrix products (odd sizes are padded first) == the strided
    1x1 convolutions, in float64, values and gradients of input and both weights."""
    torch.manual_seed(4)
    fast = FactorizedReduce(6, 8, affine=False, track=False).double()
    stock = FactorizedReduce(6, 8, affine=False, track=False).double()
    stock.load_state_dict(fast.state_dict())
    set_fast_path(stock, False)
    x = channels_last(torch.randn(3, 6, size, size, dtype=torch.float64))
    w1, w2 = fast.conv_1.weight, fast.conv_2.weight

    def run(m):
        return _grads(lambda x, a, b: torch.func.functional_call(
            m, {"conv_1.weight": a, "conv_2.weight": b}, (x,)), x, w1, w2)

    (out_f, g_f), (out_s, g_s) = run(fast), run(stock)
    assert out_f.shape == (3, 8, (size + 1) // 2, (size + 1) // 2)
    torch.testing.assert_close(out_f, out_s, **TOL)
    for a, b in zip(g_f, g_s, strict=True):
        torch.testing.assert_close(a, b, **TOL)


class _MixedLayouts(TorchDispatchMode):
    """Counts elementwise kernels that meet tensors whose strides are ordered differently
    (channels innermost, and not)."""

    OPS = ("threshold_backward", "add.Tensor", "add_.Tensor", "mul.Tensor",
           "native_batch_norm_backward", "addcmul")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if any(op in name for op in self.OPS):
            ts = [a for a in args if isinstance(a, torch.Tensor) and a.ndim == 4
                  and a.shape[1] > 1 and a.shape[-1] * a.shape[-2] > 1]
            cl = {t.stride(1) < t.stride(3) for t in ts}  # channels innermost or not
            if len(cl) > 1:
                self.seen.append(f"{name} {[tuple(t.stride()) for t in ts]}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("model", ["supernet", "network"])
def test_backward_stays_channels_last(model):
    """No elementwise kernel of the forward or backward mixes the two layouts (PyTorch's
    mixed-stride fallback is 10-40x slower on a CPU): the fast path's speed, as a property."""
    torch.manual_seed(5)
    x = torch.randn(4, 3, 16, 16)
    if model == "supernet":
        space = _space(16)
        net = SuperNet(space)
        z = {c: t.float() for c, t in _z(space, "relaxed", 1).items()}
        run = lambda: net(x, z)  # noqa: E731
    else:
        net = Network(get_genotype("DARTS_V2"), C=4, n_classes=3, layers=3)
        run = lambda: net(x)[0]  # noqa: E731
    with _MixedLayouts() as mode:
        run().square().sum().backward()
    assert mode.seen == []


def test_weighted_sum_gradients_and_second_order():
    """The mixed op's sum with its custom backward: ``w`` gets ``<g, y_k>`` on the summed
    ops and 0 elsewhere; gradcheck and gradgradcheck in float64 (second-order MAML)."""
    torch.manual_seed(6)
    w = torch.rand(5, dtype=torch.float64, requires_grad=True)
    ys = [channels_last(torch.randn(2, 3, 4, 4, dtype=torch.float64)).requires_grad_()
          for _ in range(3)]
    ks = [0, 2, 3]
    out = weighted_sum(w, ks, ys)
    torch.testing.assert_close(out, sum(w[k] * y for k, y in zip(ks, ys, strict=True)), **TOL)
    g = torch.randn(out.shape, dtype=torch.float64)
    for g_layout in (g, channels_last(g)):  # the plain sum, and the dot of the two layouts
        (gw,) = torch.autograd.grad(out, w, g_layout, retain_graph=True)
        expected = torch.zeros(5, dtype=torch.float64)
        for k, y in zip(ks, ys, strict=True):
            expected[k] = (g * y).sum()
        torch.testing.assert_close(gw, expected, **TOL)
    fn = lambda w, *ys: weighted_sum(w, ks, list(ys))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w, *ys))
    assert torch.autograd.gradgradcheck(fn, (w, *ys))


@pytest.mark.parametrize("track", [False, True])
def test_edges_reading_one_state_share_its_pooling(track):
    """Pooling + BatchNorm without weights or running statistics is the same on every edge
    that reads a state: computed once per state (3 of the 5 normal edges, 2 of the 4 strided
    reduction edges + 1); with running statistics every edge keeps its own."""
    space = SearchSpace.preset("cpu", track_running_stats=track)
    net = SuperNet(space)
    calls = []
    for cell in net.cells:
        for edge in cell.edges:
            for k in (DARTS_OPS.index("max_pool_3x3"), DARTS_OPS.index("avg_pool_3x3")):
                edge.ops[k].register_forward_hook(lambda *_: calls.append(1))
    z = {c: torch.full(space.z_shape, 1 / space.n_ops) for c in space.cell_types}
    net(torch.randn(2, 3, 16, 16), z)
    assert len(calls) == (2 * (5 + 5) if track else 2 * (3 + 3))


def test_torch_func_grad_through_the_fast_path():
    """``torch.func.grad`` (no ``vmap``) over the fast supernet: the custom autograd functions
    step aside inside the transform, and the gradient equals plain autograd's."""
    space = _space(16)
    torch.manual_seed(0)
    net = SuperNet(space).double()
    spec = ParamSpec.from_module(net)
    theta = spec.flatten(dict(net.named_parameters())).detach()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    z = _z(space, "relaxed", 2)

    def loss(t):
        return functional_forward(net, spec, t, x, z).square().sum()

    transformed = torch.func.grad(loss)(theta)
    (plain,) = torch.autograd.grad(loss(theta.requires_grad_()), theta)
    torch.testing.assert_close(transformed, plain, **TOL)
