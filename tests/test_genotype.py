"""Genotype data, validation, JSON round trip, both decoders, published cells, diagrams."""

import json

import numpy as np
import pytest
import torch

from pyro_base.genotype import (
    PUBLISHED_GENOTYPES,
    Genotype,
    decode,
    decode_base,
    decode_darts,
    get_genotype,
    n_parameter_free,
    plot_cell,
)
from pyro_base.ops import DARTS_OPS
from pyro_base.search_space import SearchSpace

OPS3 = ("none", "skip_connect", "sep_conv_3x3")


def _table(nodes, entries, ops=OPS3, floor=0.0):
    """An [E, K] table, zero (or ``floor``) except ``entries[(node, input, op)] = p``."""
    space = SearchSpace(ops=ops, nodes=nodes)
    t = np.full(space.z_shape, floor)
    for (node, j, op), p in entries.items():
        t[space.edges().index((node, j)), ops.index(op)] = p
    return t


# -- the data class -----------------------------------------------------------------------
def test_normalises_lists_and_default_concat():
    g = Genotype(normal=[["skip_connect", 0], ("sep_conv_3x3", np.int64(1))],
                 reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)])
    assert g.normal == (("skip_connect", 0), ("sep_conv_3x3", 1))
    assert g.normal_concat == (2,) and g.reduce_concat == (2,)
    assert isinstance(g.normal[1][1], int)
    assert g.n_nodes() == 1
    assert hash(g) == hash(Genotype.from_dict(g.to_dict()))


@pytest.mark.parametrize("name", sorted(PUBLISHED_GENOTYPES))
def test_json_round_trip(name, tmp_path):
    g = get_genotype(name)
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    g.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == g


@pytest.mark.parametrize("kwargs, match", [
    (dict(normal=[("conv_9x9", 0), ("skip_connect", 1)]), r"unknown op 'conv_9x9'"),
    (dict(normal=[("skip_connect", 0), ("skip_connect", 2)]),
     r"input 2 is beyond node 2; expected an input in \[0, 2\)"),
    (dict(normal=[("skip_connect", 0), ("skip_connect", -1)]), r"input -1"),
    (dict(normal=[("skip_connect", 0)]), r"1 \(op, input\) pairs; expected a positive even"),
    (dict(normal=[]), r"0 \(op, input\) pairs"),
    (dict(normal=[("skip_connect", "0"), ("skip_connect", 1)]), r"input must be an int"),
    (dict(normal=["skip_connect", "skip_connect"]), r"expected an \(op, input\) pair"),
    (dict(normal_concat=[2, 3]), r"normal_concat index 3 out of range; expected .*\[2, 3\)"),
    (dict(reduce_concat=[]), r"reduce_concat"),
])
def test_bad_genotypes_raise(kwargs, match):
    fields = dict(normal=[("skip_connect", 0), ("sep_conv_3x3", 1)],
                  reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)])
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Genotype(**fields)


def test_bad_json_and_dicts():
    with pytest.raises(ValueError, match="does not parse"):
        Genotype.from_json("{not json")
    with pytest.raises(ValueError, match=r"unknown genotype keys \['normals'\]"):
        Genotype.from_dict({"normals": [], "reduce": []})
    with pytest.raises(ValueError, match="missing"):
        Genotype.from_dict({"normal": [("skip_connect", 0), ("skip_connect", 1)]})


# -- published cells ----------------------------------------------------------------------
def test_published_names_and_aliases():
    assert set(PUBLISHED_GENOTYPES) == {"DARTS_V1", "DARTS_V2", "NASNet", "AmoebaNet", "ENAS",
                                        "PNAS", "SNAS", "BASE_CIFAR", "BASE_IMAGENET"}
    assert get_genotype("NASNet-A") is PUBLISHED_GENOTYPES["NASNet"]
    assert get_genotype("amoebanet-a") is PUBLISHED_GENOTYPES["AmoebaNet"]
    assert get_genotype("darts-v2") is get_genotype("DARTS") is PUBLISHED_GENOTYPES["DARTS_V2"]
    assert get_genotype("base_cifar") is PUBLISHED_GENOTYPES["BASE_CIFAR"]
    with pytest.raises(ValueError, match=r"unknown genotype 'GDAS'.*DARTS_V2"):
        get_genotype("GDAS")
    with pytest.raises(TypeError):
        PUBLISHED_GENOTYPES["X"] = PUBLISHED_GENOTYPES["NASNet"]


def test_published_cells_match_sources():
    d = get_genotype("DARTS_V2")
    assert d.normal[-1] == ("dil_conv_3x3", 2) and d.reduce_concat == (2, 3, 4, 5)
    assert get_genotype("NASNet").reduce_concat == (4, 5, 6)
    assert get_genotype("AmoebaNet").reduce[-2:] == (("conv_7x1_1x7", 0), ("sep_conv_3x3", 5))
    # The released BASE CIFAR cell uses input 0 twice at node 3 (max_pool + dil_conv_5x5).
    assert get_genotype("BASE_CIFAR").normal[2:4] == (("max_pool_3x3", 0), ("dil_conv_5x5", 0))


def test_n_parameter_free():
    g = get_genotype("DARTS_V2")
    assert n_parameter_free(g, "normal") == 2
    assert n_parameter_free(g, "reduce") == 8
    assert n_parameter_free(g) == 10
    with pytest.raises(ValueError, match="'middle'"):
        n_parameter_free(g, "middle")


# -- decoders -----------------------------------------------------------------------------
def test_decode_base_repeats_inputs_and_skips_none():
    # node 2: input 0 carries both strong ops; 'none' is largest everywhere but never chosen.
    normal = _table(2, {(2, 0, "none"): 0.99, (2, 0, "sep_conv_3x3"): 0.9,
                        (2, 0, "skip_connect"): 0.8, (2, 1, "sep_conv_3x3"): 0.5,
                        (3, 2, "skip_connect"): 0.7, (3, 1, "sep_conv_3x3"): 0.6,
                        (3, 0, "none"): 1.0})
    g = decode_base(normal, normal, ops=OPS3, nodes=2)
    assert g.normal == (("sep_conv_3x3", 0), ("skip_connect", 0),
                        ("skip_connect", 2), ("sep_conv_3x3", 1))
    assert g.normal_concat == (2, 3)
    # The DARTS rule on the same table picks two distinct inputs.
    d = decode_darts(normal, normal, ops=OPS3, nodes=2)
    assert d.normal == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                        ("skip_connect", 2), ("sep_conv_3x3", 1))


def test_decode_darts_matches_darts_parse():
    rng = np.random.default_rng(0)
    w = rng.random((14, 8))
    g = decode_darts(torch.tensor(w), w, ops=DARTS_OPS, nodes=4)
    # DARTS' _parse, verbatim in spirit (PRIMITIVES = DARTS_OPS, 'none' at index 0).
    gene, start, n = [], 0, 2
    for _ in range(4):
        W = w[start:start + n]
        edges = sorted(range(n), key=lambda x: -max(W[x][k] for k in range(8) if k != 0))[:2]
        for j in edges:
            k_best = None
            for k in range(8):
                if k != 0 and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            gene.append((DARTS_OPS[k_best], j))
        start, n = start + n, n + 1
    assert g.normal == tuple(gene) == g.reduce


def test_decode_base_is_argtop2_over_pairs():
    rng = np.random.default_rng(1)
    w = rng.random((14, 8))
    g = decode_base(w, w, ops=DARTS_OPS, nodes=4)
    start = 0
    for i in range(4):
        block = w[start:start + i + 2, 1:]
        top = np.argsort(-block, axis=None)[:2]
        rows, cols = np.unravel_index(top, block.shape)
        expect = [(DARTS_OPS[k + 1], int(j)) for j, k in zip(rows, cols, strict=True)]
        assert list(g.normal[2 * i:2 * i + 2]) == expect
        start += i + 2


def test_decode_without_none_and_dict_api():
    space = SearchSpace(ops=("skip_connect", "sep_conv_3x3"), nodes=2, cells=2, reductions=(1,))
    p = torch.softmax(torch.randn(space.z_shape), -1)
    g = decode({"normal": p, "reduce": p}, space=space, rule="darts")
    assert g == decode_darts(p, p, ops=space.ops, nodes=2)
    assert decode({"normal": p, "reduce": p}, space=space) == decode_base(p, p, ops=space.ops,
                                                                          nodes=2)


def test_decode_space_without_reduce_cell_reuses_normal():
    space = SearchSpace(ops=OPS3, nodes=2, cells=2, reductions=())
    assert space.cell_types == ("normal",)
    p = np.random.default_rng(2).random(space.z_shape)
    g = decode({"normal": p}, space=space)
    assert g.reduce == g.normal


def test_decode_bad_inputs():
    space = SearchSpace(ops=OPS3, nodes=2, cells=3)
    good = np.ones(space.z_shape)
    with pytest.raises(ValueError, match=r"shape \(4, 3\); expected \[5, 3\]"):
        decode_base(np.ones((4, 3)), good, ops=OPS3, nodes=2)
    with pytest.raises(ValueError, match="unknown decoding rule 'top3'"):
        decode({"normal": good, "reduce": good}, space=space, rule="top3")
    with pytest.raises(ValueError, match="no op besides 'none'"):
        decode_base(np.ones((5, 1)), np.ones((5, 1)), ops=("none",), nodes=2)
    with pytest.raises(ValueError, match="unknown op 'conv'"):
        decode_base(good, good, ops=("none", "skip_connect", "conv"), nodes=2)
    with pytest.raises(ValueError, match="expected"):
        decode({"z": good}, space=space)


# -- diagrams -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plot_cell_writes_file(tmp_path, suffix):
    path = tmp_path / f"cell.{suffix}"
    plot_cell(get_genotype("BASE_CIFAR"), "normal", path)
    assert path.stat().st_size > 1000
    if suffix == "png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'middle'"):
        plot_cell(get_genotype("BASE_CIFAR"), "middle")
