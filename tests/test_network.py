"""The discrete evaluation network: every published cell runs; DARTS' published sizes."""

import pytest
import torch

from pyro_base.genotype import PUBLISHED_GENOTYPES, Genotype, get_genotype
from pyro_base.network import Network, count_macs, count_parameters, drop_path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GENOTYPES))
def test_every_published_genotype_runs(name):
    net = Network(get_genotype(name), C=8, n_classes=5, layers=5, auxiliary=True)
    net.drop_path_prob = 0.2
    x = torch.randn(2, 3, 16, 16)
    logits, aux = net(x)                       # training mode: aux head on a 4x4 map
    assert logits.shape == aux.shape == (2, 5)
    (logits.sum() + aux.sum()).backward()
    net.eval()
    logits, aux = net(x)
    assert logits.shape == (2, 5) and aux is None and torch.isfinite(logits).all()


@pytest.mark.parametrize("size", [32, 17])
def test_cifar_aux_head_sizes(size):
    net = Network(get_genotype("DARTS_V2"), C=8, n_classes=10, layers=6, auxiliary=True)
    logits, aux = net(torch.randn(2, 3, size, size))   # 8x8 (DARTS' pool) and 5x5 maps
    assert logits.shape == aux.shape == (2, 10)


def test_imagenet_stem_runs():
    net = Network(get_genotype("BASE_IMAGENET"), C=8, n_classes=7, layers=3, auxiliary=True,
                  stem="imagenet", in_channels=1)
    logits, aux = net(torch.randn(2, 1, 64, 64))
    assert logits.shape == aux.shape == (2, 7)


def test_darts_v2_cifar_parameter_count():
    """DARTS (2nd order) on CIFAR-10: 3.3M parameters at C=36, 20 cells, aux head excluded."""
    net = Network(get_genotype("DARTS_V2"), C=36, n_classes=10, layers=20, auxiliary=True)
    assert abs(count_parameters(net) - 3.3) < 0.05       # measured: 3.349342
    assert count_parameters(net, exclude_auxiliary=False) > count_parameters(net) + 0.4


def test_other_published_sizes():
    # AmoebaNet-A (N=6, F=36): 3.2M in its paper; DARTS ImageNet (C=48, 14 cells): 4.7M.
    amoeba = Network(get_genotype("AmoebaNet"), C=36, n_classes=10, layers=20, auxiliary=True)
    assert abs(count_parameters(amoeba) - 3.2) < 0.1        # measured: 3.145
    imnet = Network(get_genotype("DARTS_V2"), C=48, n_classes=1000, layers=14,
                    auxiliary=True, stem="imagenet")
    assert abs(count_parameters(imnet) - 4.7) < 0.05        # measured: 4.719


def test_count_macs_by_hand():
    g = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)],
                 reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)])
    net = Network(g, C=2, n_classes=3, layers=1, reductions=())
    # stem 3x3 conv 3->6 on 4x4, two 1x1 preprocess convs 6->2, classifier 2->3.
    assert count_macs(net, 4) == 16 * 6 * 27 + 2 * 16 * 2 * 6 + 2 * 3
    assert net.training                        # restored


def test_drop_path_only_in_training_and_not_on_identity():
    y = drop_path(torch.ones(1000, 1, 1, 1), 0.25)
    assert torch.isclose(y[y != 0], torch.tensor(1 / 0.75)).all()
    assert 0.15 < (y == 0).float().mean() < 0.35
    x = torch.randn(4, 3, 8, 8)
    skips = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)],
                     reduce=[("skip_connect", 0), ("skip_connect", 1)])
    only_identity = Network(skips, C=4, n_classes=3, layers=2, reductions=())
    convs = Network(get_genotype("DARTS_V2"), C=4, n_classes=3, layers=3)
    for net in (only_identity, convs):
        net.drop_path_prob = 0.9
    # Training mode: identity ops are never dropped; other ops are.
    assert torch.equal(only_identity(x)[0], only_identity(x)[0])
    assert not torch.equal(convs(x)[0], convs(x)[0])
    convs.eval()
    assert torch.equal(convs(x)[0], convs(x)[0])


def test_bad_network_arguments():
    g = get_genotype("DARTS_V2")
    with pytest.raises(ValueError, match="stem must be one of .* got 'mnist'"):
        Network(g, C=8, n_classes=10, layers=5, stem="mnist")
    with pytest.raises(ValueError, match="C must be a positive int, got 0"):
        Network(g, C=0, n_classes=10, layers=5)
    with pytest.raises(ValueError, match="reduction index 7"):
        Network(g, C=8, n_classes=10, layers=5, reductions=(7,))
    with pytest.raises(ValueError, match="genotype must be a Genotype"):
        Network("DARTS_V2", C=8, n_classes=10, layers=5)
    net = Network(g, C=8, n_classes=10, layers=3)
    with pytest.raises(ValueError, match=r"expected \[B, 3, H, W\]"):
        net(torch.randn(2, 1, 16, 16))
