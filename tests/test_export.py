"""Exporting a trained genotype network: logits only, equal to the eager eval-mode network."""

import pytest
import torch

from pyro_base.export import InferenceNetwork, export_network, load_exported, save_exported
from pyro_base.genotype import get_genotype
from pyro_base.network import Network

ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def trained_net():
    """A small DARTS_V2 network with an auxiliary head, a few training steps in (non-trivial
    BatchNorm running statistics), left in training mode with the CPU fast path on."""
    torch.manual_seed(0)
    net = Network(get_genotype("DARTS_V2"), C=8, n_classes=5, layers=5, auxiliary=True)
    net.drop_path_prob = 0.2
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))
        logits, aux = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + 0.4 * (
            torch.nn.functional.cross_entropy(aux, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert net.training and net.cpu_fast and net.auxiliary_head is not None
    return net


def eager_logits(net, x):
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits, aux = net(x)
    finally:
        net.train(was_training)
    assert aux is None
    return logits


@pytest.fixture(scope="module")
def program(trained_net):
    return export_network(trained_net, torch.randn(2, 3, 16, 16))


def test_inference_network_is_a_frozen_logits_only_copy(trained_net):
    state = {k: v.clone() for k, v in trained_net.state_dict().items()}
    wrapper = InferenceNetwork(trained_net)
    x = torch.randn(3, 3, 16, 16)
    out = wrapper(x)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 5)
    torch.testing.assert_close(out, eager_logits(trained_net, x), atol=ATOL, rtol=RTOL)
    assert not wrapper.training and not wrapper.net.training
    assert wrapper.train() is wrapper and not wrapper.net.training      # stays in eval mode
    assert wrapper.net.auxiliary_head is None and not wrapper.net.cpu_fast
    assert not any(getattr(m, "fast", False) for m in wrapper.modules())
    assert not any(p.requires_grad for p in wrapper.parameters())
    assert not any("auxiliary" in k for k in wrapper.state_dict())
    # The network itself is unchanged: mode, fast path, auxiliary head, weights.
    assert trained_net.training and trained_net.cpu_fast
    assert trained_net.auxiliary_head is not None
    assert all(getattr(m, "fast", True) for m in trained_net.modules())
    assert all(torch.equal(v, state[k]) for k, v in trained_net.state_dict().items())
    with pytest.raises(ValueError, match="net must be a Network"):
        InferenceNetwork(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("batch", [2, 7, 1])
def test_exported_program_equals_eager_logits_for_any_batch(trained_net, program, batch):
    x = torch.randn(batch, 3, 16, 16)
    torch.testing.assert_close(program.module()(x), eager_logits(trained_net, x),
                               atol=ATOL, rtol=RTOL)


def test_auxiliary_head_and_fast_path_are_not_in_the_exported_graph(program):
    names = [*program.graph_signature.parameters, *program.graph_signature.buffers,
             *program.state_dict]
    assert names and not any("auxiliary" in n for n in names)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("aten.linear.default") == 1                  # the classifier only
    assert any("batch_norm" in t for t in targets)
    assert not any("contiguous" in t or "permute" in t for t in targets)   # no channels-last
    outputs = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
    assert len(outputs) == 1                                          # logits, no None


def test_save_and_load_round_trip(trained_net, program, tmp_path):
    path = tmp_path / "net.pt2"
    save_exported(program, path)
    loaded = load_exported(path)
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(loaded.module()(x), eager_logits(trained_net, x),
                               atol=ATOL, rtol=RTOL)


def test_static_batch_and_batch_of_one_example(trained_net):
    static = export_network(trained_net, torch.randn(3, 3, 16, 16), dynamic_batch=False)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(static.module()(x), eager_logits(trained_net, x),
                               atol=ATOL, rtol=RTOL)
    with pytest.raises((AssertionError, RuntimeError)):              # a shape guard fails
        static.module()(torch.randn(4, 3, 16, 16))
    one = export_network(InferenceNetwork(trained_net), torch.randn(1, 3, 16, 16))
    x = torch.randn(5, 3, 16, 16)
    torch.testing.assert_close(one.module()(x), eager_logits(trained_net, x),
                               atol=ATOL, rtol=RTOL)
    with pytest.raises((AssertionError, RuntimeError)):              # H x W are fixed
        one.module()(torch.randn(2, 3, 18, 18))
    with pytest.raises(ValueError, match=r"example must be a \[B, C, H, W\] tensor"):
        export_network(trained_net, torch.randn(3, 16, 16))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                            "ignore::torch.jit.TracerWarning")
def test_jit_trace_of_the_wrapper(trained_net):
    x = torch.randn(4, 3, 16, 16)
    traced = torch.jit.trace(InferenceNetwork(trained_net), x)
    torch.testing.assert_close(traced(x), eager_logits(trained_net, x), atol=ATOL, rtol=RTOL)


def test_imagenet_stem_one_channel_exports():
    torch.manual_seed(1)
    net = Network(get_genotype("BASE_IMAGENET"), C=8, n_classes=7, layers=3, auxiliary=True,
                  stem="imagenet", in_channels=1)
    program = export_network(net, torch.randn(2, 1, 40, 40))
    x = torch.randn(3, 1, 40, 40)
    torch.testing.assert_close(program.module()(x), eager_logits(net, x), atol=ATOL, rtol=RTOL)
