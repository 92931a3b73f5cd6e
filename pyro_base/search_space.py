"""The DARTS-style cell search space.

A network is a stem followed by ``cells`` cells; cells at ``reductions`` halve the resolution
and double the channels. Each cell has two inputs (the outputs of the two previous cells) and
``nodes`` intermediate nodes; node ``i`` sums one mixed op per earlier state, so a cell has
``E = sum_{i<nodes} (2 + i)`` edges (14 for 4 nodes). Edge ``e`` of a cell carries a weight
vector ``z[e] in simplex^K`` over the ``K`` ops of the space:

    x_k = sum_{i<k} sum_l z^l_{i,k} op_l(x_i; theta)

There are two cell types, ``normal`` and ``reduce``, each with its own ``z`` of shape [E, K].

Usage::

    space = SearchSpace.preset("cpu")          # 16x16 inputs, 1x1 stem, 2 cells
    space = SearchSpace.preset("darts")        # the DARTS CIFAR-10 search network
    space = SearchSpace(ops=("skip_connect", "sep_conv_3x3"), nodes=2, cells=2, channels=8,
                        input_size=16, n_classes=5)
    space.n_edges, space.n_ops, space.edge_labels()
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from pyro_base.ops import DARTS_OPS, check_op

CELL_TYPES: tuple[str, str] = ("normal", "reduce")


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """Everything that fixes the shape of the supernet (and so of ``theta`` and ``z``).

    :param ops: op names, in the order of the last axis of ``z``.
    :param nodes: intermediate nodes per cell.
    :param cells: number of cells.
    :param reductions: indices of reduction cells; ``None`` means DARTS' ``cells // 3`` and
        ``2 * cells // 3``.
    :param channels: initial channels ``C``.
    :param stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
    :param stem_kernel: 3 (DARTS) or 1 (keeps pixel-level motifs visible to the cells).
    :param in_channels: image channels.
    :param input_size: image height = width.
    :param n_classes: classifier outputs (tasks with fewer classes use a prefix of them).
    :param track_running_stats: BatchNorm running statistics in the supernet (off in search).
    """

    ops: tuple[str, ...] = DARTS_OPS
    nodes: int = 4
    cells: int = 8
    reductions: tuple[int, ...] | None = None
    channels: int = 16
    stem_multiplier: int = 3
    stem_kernel: int = 3
    in_channels: int = 3
    input_size: int = 32
    n_classes: int = 10
    track_running_stats: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if not self.ops:
            raise ValueError("ops must name at least one op")
        for op in self.ops:
            check_op(op)
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must be distinct, got {self.ops}")
        for name in ("nodes", "cells", "channels", "stem_multiplier", "in_channels",
                     "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.stem_kernel not in (1, 3):
            raise ValueError(f"stem_kernel must be 1 or 3, got {self.stem_kernel}")
        if self.channels % 2:
            raise ValueError(f"channels must be even (FactorizedReduce), got {self.channels}")
        if self.reductions is None:
            reds = sorted({self.cells // 3, 2 * self.cells // 3} - {0} or {self.cells // 2})
            object.__setattr__(self, "reductions", tuple(r for r in reds if r < self.cells))
        else:
            object.__setattr__(self, "reductions", tuple(sorted(self.reductions)))
            for r in self.reductions:
                if not 0 <= r < self.cells:
                    raise ValueError(f"reduction index {r} outside [0, {self.cells})")
        if self.input_size < 2 ** len(self.reductions):
            raise ValueError(
                f"input_size {self.input_size} too small for {len(self.reductions)} reductions"
            )

    # -- shapes ---------------------------------------------------------------------------
    @property
    def n_ops(self) -> int:
        return len(self.ops)

    @property
    def n_edges(self) -> int:
        return sum(2 + i for i in range(self.nodes))

    @property
    def z_shape(self) -> tuple[int, int]:
        return (self.n_edges, self.n_ops)

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Cell types present: ``("normal", "reduce")``, or one of them."""
        has_reduce = bool(self.reductions)
        has_normal = len(self.reductions) < self.cells
        return tuple(c for c, ok in zip(CELL_TYPES, (has_normal, has_reduce), strict=True) if ok)

    def edges(self) -> list[tuple[int, int]]:
        """``(node, input)`` per edge, nodes numbered from 2 (0, 1 are the cell inputs)."""
        return [(i + 2, j) for i in range(self.nodes) for j in range(i + 2)]

    def edge_labels(self) -> list[str]:
        """Readable edge names, e.g. ``"node2<-input0"``, ``"node3<-node2"``."""
        return [f"node{n}<-{'input' if j < 2 else 'node'}{j}" for n, j in self.edges()]

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ops"] = list(self.ops)
        d["reductions"] = list(self.reductions or ())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown search-space keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "ops" in d:
            d["ops"] = tuple(d["ops"])
        if d.get("reductions") is not None:
            d["reductions"] = tuple(d["reductions"])
        return cls(**d)

    def fingerprint(self) -> str:
        """A short hash of the fields that fix parameter shapes (for checkpoint checks)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **changes: Any) -> SearchSpace:
        return replace(self, **changes)

    # -- presets --------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SearchSpace:
        """Named configurations.

        * ``darts``: the DARTS CIFAR-10 search network (8 cells, C=16, 4 nodes, 8 ops, 32x32).
        * ``cpu``: the embedded 16x16 tasks on a laptop CPU (1x1 stem, a normal and a reduction
          cell, C=8, 2 nodes, the 8 DARTS ops; ~0.13 s per inner step at batch 32 on one core).
        * ``tiny``: the smallest useful space, for tests (2 cells, C=4, 2 nodes).
        """
        presets: dict[str, dict[str, Any]] = {
            "darts": dict(),
            "cpu": dict(cells=2, reductions=(1,), channels=8, nodes=2, stem_multiplier=2,
                        stem_kernel=1, input_size=16),
            "tiny": dict(cells=2, reductions=(1,), channels=4, nodes=2, stem_multiplier=1,
                         stem_kernel=1, input_size=12, n_classes=5),
        }
        if name not in presets:
            raise ValueError(f"unknown search-space preset {name!r}; expected one of "
                             f"{sorted(presets)}")
        return cls(**{**presets[name], **overrides})
