"""The CPU fast path (channels-last layout, fast depthwise / pointwise convolutions, the mixed
op's shared ReLU): outputs and gradients equal the stock path's to float rounding (float64)."""

import pytest
import torch
import torch.nn.functional as F

from pyro_base.cpu_conv import DepthwiseConv2d, PointwiseConv2d, channels_last, set_fast_path
from pyro_base.genotype import get_genotype
from pyro_base.network import Network
from pyro_base.ops import DARTS_OPS
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import ParamSpec, SuperNet, functional_forward

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
