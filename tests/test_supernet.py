"""SearchSpace and SuperNet: shapes, flat-vector weights, exact zero-op skipping, bad input."""

import pytest
import torch

from pyro_base.ops import DARTS_OPS
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import ParamSpec, SuperNet, functional_forward, uniform_z


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.preset("tiny", ops=DARTS_OPS)


def _hard_z(space: SearchSpace, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {c: torch.nn.functional.one_hot(
        torch.randint(0, space.n_ops, (space.n_edges,), generator=g), space.n_ops).float()
        for c in space.cell_types}


def test_presets_and_edges():
    darts = SearchSpace.preset("darts")
    assert (darts.cells, darts.channels, darts.nodes, darts.n_ops) == (8, 16, 4, 8)
    assert darts.reductions == (2, 5) and darts.n_edges == 14 and darts.input_size == 32
    cpu = SearchSpace.preset("cpu")
    assert cpu.stem_kernel == 1 and 2 <= cpu.cells <= 4 and cpu.input_size == 16
    assert darts.edge_labels()[:5] == ["node2<-input0", "node2<-input1", "node3<-input0",
                                       "node3<-input1", "node3<-node2"]
    assert SearchSpace.from_dict(darts.to_dict()) == darts
    assert darts.fingerprint() != cpu.fingerprint()


def test_forward_shapes_and_flat_injection_is_exact(space):
    torch.manual_seed(0)
    net = SuperNet(space)
    spec = ParamSpec.from_module(net)
    theta = spec.flatten(dict(net.named_parameters()))
    assert theta.shape == (spec.size,) == (sum(p.numel() for p in net.parameters()),)
    x = torch.randn(4, 3, space.input_size, space.input_size)
    z = uniform_z(space)
    out = net(x, z)
    assert out.shape == (4, space.n_classes)
    assert torch.equal(functional_forward(net, spec, theta, x, z), out)
    # a different theta changes the output, and gradients reach theta and z
    theta2 = (theta.detach() + 0.1 * torch.randn_like(theta)).requires_grad_()
    zz = {c: v.clone().requires_grad_() for c, v in z.items()}
    out2 = functional_forward(net, spec, theta2, x, zz)
    assert not torch.allclose(out2, out)
    out2.sum().backward()
    assert theta2.grad is not None and torch.isfinite(theta2.grad).all()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in zz.values())
    assert spec.unflatten(theta)["classifier.weight"].shape == net.classifier.weight.shape


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_op_skipping_is_exact(space, seed):
    torch.manual_seed(seed)
    net = SuperNet(space)
    x = torch.randn(3, 3, space.input_size, space.input_size)
    z = _hard_z(space, seed)
    z["normal"][0] = 0.0  # an edge with every weight zero, and a sparse soft row
    z["reduce"][1] = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.25, 0.25, 0.0, 0.0])
    net.skip_zero = False
    full = net(x, z)
    net.skip_zero = True
    assert net.active_ops(z)["normal"][0] == []
    assert torch.equal(net(x, z), full)


def test_every_op_runs_in_normal_and_reduction_cells():
    for op in DARTS_OPS + ("sep_conv_7x7", "conv_7x1_1x7"):
        space = SearchSpace.preset("tiny", ops=(op,))
        net = SuperNet(space)
        out = net(torch.randn(2, 3, 12, 12), uniform_z(space))
        assert out.shape == (2, space.n_classes), op


def test_bad_input_names_the_value(space):
    net = SuperNet(space)
    x = torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match=r"z\['normal'\] must have shape \(5, 8\)"):
        net(x, {"normal": torch.ones(4, 8), "reduce": torch.ones(5, 8)})
    with pytest.raises(ValueError, match="missing cell type 'reduce'"):
        net(x, {"normal": torch.ones(5, 8)})
    with pytest.raises(ValueError, match="x must be"):
        net(torch.randn(2, 1, 12, 12), uniform_z(space))
    with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
        SearchSpace(ops=("conv_9x9",))
    with pytest.raises(ValueError, match="nodes must be a positive int"):
        SearchSpace(nodes=0)
    with pytest.raises(ValueError, match="reduction index 9"):
        SearchSpace(cells=4, reductions=(9,))
    with pytest.raises(ValueError, match="unknown search-space preset 'huge'"):
        SearchSpace.preset("huge")
    with pytest.raises(ValueError, match="theta must have"):
        ParamSpec.from_module(net).unflatten(torch.zeros(3))
