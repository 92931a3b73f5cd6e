"""Shapes of every registered op, for stride 1 (normal cells) and 2 (reduction cells)."""

import math

import pytest
import torch

from pyro_base.ops import (
    DARTS_OPS,
    OPS,
    PARAMETER_FREE_OPS,
    FactorizedReduce,
    ReLUConvBN,
    check_op,
    make_op,
)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("affine", [True, False])
def test_op_shape(name, stride, size, affine):
    torch.manual_seed(0)
    op = make_op(name, C=4, stride=stride, affine=affine, track=affine)
    y = op(torch.randn(2, 4, size, size))
    out = math.ceil(size / stride)
    assert y.shape == (2, 4, out, out)
    assert torch.isfinite(y).all()


def test_parameter_free_ops_have_no_parameters_at_stride_1():
    for name in PARAMETER_FREE_OPS:
        assert sum(p.numel() for p in make_op(name, C=4, stride=1).parameters()) == 0


def test_darts_ops_registered():
    assert set(DARTS_OPS) <= set(OPS)
    assert {"sep_conv_7x7", "conv_7x1_1x7"} <= set(OPS)


def test_none_is_zero():
    assert make_op("none", C=3, stride=2)(torch.randn(1, 3, 5, 5)).abs().sum() == 0


@pytest.mark.parametrize("size", [8, 9])
def test_factorized_reduce_and_preprocess_shapes(size):
    x = torch.randn(2, 6, size, size)
    assert FactorizedReduce(6, 8)(x).shape == (2, 8, math.ceil(size / 2), math.ceil(size / 2))
    assert ReLUConvBN(6, 8, 1, 1, 0)(x).shape == (2, 8, size, size)


def test_bad_op_names_and_strides():
    with pytest.raises(ValueError, match="conv_9x9"):
        check_op("conv_9x9")
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        make_op("sep_conv_3x3", C=4, stride=3)
    with pytest.raises(ValueError, match="even C_out"):
        FactorizedReduce(4, 5)
