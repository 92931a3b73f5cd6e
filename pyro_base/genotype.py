"""Genotypes: discrete cells as plain data, decoded from edge/op probabilities.

A genotype lists, per cell type, two ``(op, input)`` pairs per intermediate node (the DARTS
convention): pair ``2 i`` and ``2 i + 1`` feed node ``i + 2``, whose inputs are the cell inputs
``0`` (``c_{k-2}``), ``1`` (``c_{k-1}``) or an earlier node ``2 .. i + 1``. The cell output
concatenates the nodes in ``*_concat``.

Two decoders turn per-edge op probabilities ``p[e, k]`` (edges in
:meth:`SearchSpace.edges` order, ops in ``ops`` order) into a genotype; ``none`` never counts:

* **BASE rule** (:func:`decode_base`): per node, the two most probable ``(input, op)`` pairs
  over all inputs and ops, ``argtop2_{j, k} p[(i, j), k]``; an input may be picked twice (as in
  the released BASE cells).
* **DARTS rule** (:func:`decode_darts`): per node, the two inputs with the largest
  ``max_k p[(i, j), k]`` (distinct), each with its best op (``_parse`` of DARTS).

Usage::

    g = get_genotype("DARTS_V2")
    g = decode({"normal": p_n, "reduce": p_r}, space=SearchSpace.preset("darts"), rule="base")
    Genotype.from_json(g.to_json()) == g
    g.save("cell.json"); plot_cell(g, cell="normal", path="normal.png")

References: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019;
Shaw et al., "Meta Architecture Search", NeurIPS 2019.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyro_base.cell_diagram import plot_cell
from pyro_base.genotypes_published import ALIASES, PUBLISHED_DATA
from pyro_base.ops import PARAMETER_FREE_OPS, check_op

if TYPE_CHECKING:
    from pyro_base.search_space import SearchSpace

__all__ = [
    "Genotype", "decode", "decode_base", "decode_darts", "get_genotype", "n_parameter_free",
    "plot_cell", "PUBLISHED_GENOTYPES",
]

Pair = tuple[str, int]
GENOTYPE_CELLS = ("normal", "reduce")


def _check_cell(name: str, pairs: Iterable[Sequence[Any]]) -> tuple[Pair, ...]:
    out: list[Pair] = []
    for p, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"{name}[{p}] = {pair!r}: expected an (op, input) pair")
        op, j = pair
        if not isinstance(op, str):
            raise ValueError(f"{name}[{p}] = {pair!r}: op must be a str, got {op!r}")
        check_op(op)
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)):
            raise ValueError(f"{name}[{p}] = {pair!r}: input must be an int, got {j!r}")
        node = p // 2 + 2
        if not 0 <= j < node:
            raise ValueError(f"{name}[{p}] = {pair!r}: input {int(j)} is beyond node {node}; "
                             f"expected an input in [0, {node})")
        out.append((op, int(j)))
    if not out or len(out) % 2:
        raise ValueError(f"{name} has {len(out)} (op, input) pairs; expected a positive even "
                         f"number (two per intermediate node)")
    return tuple(out)


def _check_concat(name: str, concat: Iterable[int] | None, n_nodes: int) -> tuple[int, ...]:
    if concat is None:
        return tuple(range(2, n_nodes + 2))
    out = tuple(int(c) for c in concat)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{name} = {out}: expected distinct node indices, at least one")
    for c in out:
        if not 2 <= c < n_nodes + 2:
            raise ValueError(f"{name} index {c} out of range; expected intermediate nodes "
                             f"in [2, {n_nodes + 2})")
    return out


@dataclass(frozen=True, kw_only=True)
class Genotype:
    """A discrete architecture: the normal and the reduction cell.

    :param normal: ``(op, input)`` pairs, two per intermediate node.
    :param normal_concat: nodes concatenated into the cell output (default: all).
    :param reduce: as ``normal``, for reduction cells.
    :param reduce_concat: as ``normal_concat``.

    Lists, ranges and numpy ints are accepted and normalised to tuples of ``(str, int)``.
    """

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...] | None = None
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for cell in GENOTYPE_CELLS:
            pairs = _check_cell(cell, getattr(self, cell))
            object.__setattr__(self, cell, pairs)
            concat = _check_concat(f"{cell}_concat", getattr(self, f"{cell}_concat"),
                                   len(pairs) // 2)
            object.__setattr__(self, f"{cell}_concat", concat)

    def n_nodes(self, cell: str = "normal") -> int:
        """Intermediate nodes of ``cell``."""
        return len(self.cell(cell)) // 2

    def cell(self, cell: str) -> tuple[Pair, ...]:
        """The pairs of ``cell`` (``"normal"`` or ``"reduce"``)."""
        return getattr(self, _check_cell_name(cell))

    def concat(self, cell: str) -> tuple[int, ...]:
        return getattr(self, f"{_check_cell_name(cell)}_concat")

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [list(p) for p in self.normal],
            "normal_concat": list(self.normal_concat or ()),
            "reduce": [list(p) for p in self.reduce],
            "reduce_concat": list(self.reduce_concat or ()),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Genotype:
        known = {"normal", "normal_concat", "reduce", "reduce_concat"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown genotype keys {sorted(unknown)}; expected {sorted(known)}")
        missing = {"normal", "reduce"} - set(d)
        if missing:
            raise ValueError(f"genotype is missing {sorted(missing)}")
        return cls(**d)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"genotype JSON does not parse: {e}") from e
        if not isinstance(d, dict):
            raise ValueError(f"genotype JSON must be an object, got {type(d).__name__}")
        return cls.from_dict(d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        return cls.from_json(Path(path).read_text())


def _check_cell_name(cell: str) -> str:
    if cell not in GENOTYPE_CELLS:
        raise ValueError(f"cell must be one of {GENOTYPE_CELLS}, got {cell!r}")
    return cell


PUBLISHED_GENOTYPES: Mapping[str, Genotype] = MappingProxyType(
    {name: Genotype(**fields) for name, fields in PUBLISHED_DATA.items()}
)
"""Published cells by canonical name (see :mod:`pyro_base.genotypes_published`)."""


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_genotype(name: str) -> Genotype:
    """A published genotype by name; case-insensitive, ``-`` and ``_`` alike, aliases such as
    ``"NASNet-A"``, ``"AmoebaNet-A"``, ``"DARTS"`` (= ``DARTS_V2``)."""
    table = {_normalise_name(k): k for k in PUBLISHED_GENOTYPES}
    table.update({_normalise_name(a): k for a, k in ALIASES.items()})
    key = _normalise_name(name) if isinstance(name, str) else None
    if key not in table:
        raise ValueError(f"unknown genotype {name!r}; expected one of "
                         f"{sorted(PUBLISHED_GENOTYPES)} (aliases: {sorted(ALIASES)})")
    return PUBLISHED_GENOTYPES[table[key]]


def n_parameter_free(genotype: Genotype, cell: str | None = None) -> int:
    """Number of parameter-free ops (``none``, pools, ``skip_connect``) in ``cell``, or in both
    cells when ``cell`` is None. Counted by name, as in DARTS' discussion of skip collapse."""
    cells = GENOTYPE_CELLS if cell is None else (_check_cell_name(cell),)
    return sum(op in PARAMETER_FREE_OPS for c in cells for op, _ in genotype.cell(c))


# -- decoding -----------------------------------------------------------------------------
def _as_table(probs: Any, ops: Sequence[str], nodes: int, name: str) -> np.ndarray:
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().double().numpy()
    table = np.asarray(probs, dtype=np.float64)
    n_edges = sum(2 + i for i in range(nodes))
    if table.shape != (n_edges, len(ops)):
        raise ValueError(f"{name} probabilities have shape {tuple(table.shape)}; expected "
                         f"[{n_edges}, {len(ops)}] (edges for {nodes} nodes, ops {tuple(ops)})")
    return table


def _check_ops(ops: Sequence[str]) -> list[int]:
    for op in ops:
        check_op(op)
    usable = [k for k, op in enumerate(ops) if op != "none"]
    if not usable:
        raise ValueError(f"ops {tuple(ops)} have no op besides 'none'")
    return usable


def _node_rows(nodes: int) -> Iterable[tuple[int, int]]:
    """(first edge row, number of inputs) per intermediate node, in SearchSpace.edges order."""
    start = 0
    for i in range(nodes):
        yield start, i + 2
        start += i + 2


def _decode_cell_base(table: np.ndarray, ops: Sequence[str], nodes: int) -> list[Pair]:
    usable = _check_ops(ops)
    gene: list[Pair] = []
    for start, n_in in _node_rows(nodes):
        cands = [(-table[start + j, k], j, k) for j in range(n_in) for k in usable]
        for _, j, k in sorted(cands)[:2]:
            gene.append((ops[k], j))
    return gene


def _decode_cell_darts(table: np.ndarray, ops: Sequence[str], nodes: int) -> list[Pair]:
    usable = _check_ops(ops)
    gene: list[Pair] = []
    for start, n_in in _node_rows(nodes):
        w = table[start:start + n_in]
        inputs = sorted(range(n_in), key=lambda j: -max(w[j, k] for k in usable))[:2]
        for j in inputs:
            k_best = max(usable, key=lambda k: (w[j, k], -k))   # first k among ties
            gene.append((ops[k_best], j))
    return gene


def _decode(rule_cell: Any, probs_normal: Any, probs_reduce: Any, ops: Sequence[str],
            nodes: int) -> Genotype:
    ops = tuple(ops)
    if not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be a positive int, got {nodes!r}")
    cells = {c: rule_cell(_as_table(p, ops, nodes, c), ops, nodes)
             for c, p in (("normal", probs_normal), ("reduce", probs_reduce))}
    return Genotype(normal=cells["normal"], reduce=cells["reduce"])


def decode_base(probs_normal: Any, probs_reduce: Any, *, ops: Sequence[str],
                nodes: int) -> Genotype:
    """BASE rule: per node the two most probable ``(input, op)`` pairs, ``none`` excluded.

    :param probs_normal: ``[E, K]`` tensor or array, edges in ``SearchSpace.edges()`` order.
    :param probs_reduce: the same for the reduction cell.
    :param ops: the ``K`` op names. :param nodes: intermediate nodes per cell.

    Pairs of a node are listed most probable first; ties go to the lower input, then op index.
    """
    return _decode(_decode_cell_base, probs_normal, probs_reduce, ops, nodes)


def decode_darts(probs_normal: Any, probs_reduce: Any, *, ops: Sequence[str],
                 nodes: int) -> Genotype:
    """DARTS rule: per node the two distinct inputs whose best non-``none`` op weight is largest,
    each with that op (strongest input first), exactly DARTS' ``Network.genotype()._parse``."""
    return _decode(_decode_cell_darts, probs_normal, probs_reduce, ops, nodes)


def decode(probs: Mapping[str, Any], *, space: SearchSpace, rule: str = "base") -> Genotype:
    """Decode ``{"normal": [E, K], "reduce": [E, K]}`` for ``space`` with ``rule``.

    A space without reduction cells (or without normal cells) has probabilities for one cell
    type only; that cell is then used for both cells of the genotype, so the result still builds
    a :class:`~pyro_base.network.Network`.
    """
    rules = {"base": decode_base, "darts": decode_darts}
    if rule not in rules:
        raise ValueError(f"unknown decoding rule {rule!r}; expected one of {sorted(rules)}")
    present = [c for c in space.cell_types if c in probs]
    if not present:
        raise ValueError(f"probs has keys {sorted(probs)}; expected {list(space.cell_types)}")
    normal = probs["normal"] if "normal" in present else probs[present[0]]
    reduce = probs["reduce"] if "reduce" in present else probs[present[0]]
    return rules[rule](normal, reduce, ops=space.ops, nodes=space.nodes)
