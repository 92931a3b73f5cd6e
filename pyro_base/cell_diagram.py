"""Cell diagrams of a genotype, drawn with matplotlib only (no system graphviz).

An arc diagram: the cell inputs ``c_{k-2}`` and ``c_{k-1}``, the intermediate nodes
``0 .. n-1`` and the output ``c_{k}`` sit on one line, left to right; every ``(op, input)``
pair is an arc labelled with its op (the first pair of a node above the line, the second below,
so a repeated input of a BASE cell gets two arcs), and dashed arcs feed the nodes in
``*_concat`` to ``c_{k}``. The file type follows the suffix (``.png``, ``.svg``, ``.pdf``).

Usage::

    from pyro_base.genotype import get_genotype, plot_cell
    plot_cell(get_genotype("BASE_CIFAR"), cell="reduce", path="reduce.png")

Reference: replaces the graphviz ``plot`` of DARTS (``visualize.py``), which needs system graphviz.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pyro_base.genotype import Genotype

_COLOURS = {"input": "#c9f0c9", "node": "#cfe3f7", "output": "#f7eaa8"}
_RISE = 0.42           # apex height of an arc per unit of span
_RADIUS = 0.3          # node circle radius (data units; nodes are 1 unit apart)
_UNIT_IN = 1.25        # inches per data unit


def _node_label(state: int | str) -> str:
    if state == 0:
        return r"$c_{k-2}$"
    if state == 1:
        return r"$c_{k-1}$"
    if state == "out":
        return r"$c_{k}$"
    return str(int(state) - 2)


def _edge(ax, x1: float, x2: float, height: float, **style) -> tuple[float, float]:
    """Quadratic arc between the nodes at ``x1`` and ``x2`` on the axis line, peaking at
    ``height`` (negative: below the line); returns the apex, where its label goes."""
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MPath

    cx, cy = (x1 + x2) / 2, 2 * height

    def trim(x: float) -> tuple[float, float]:
        d = math.hypot(cx - x, cy) or 1.0
        return x + _RADIUS * (cx - x) / d, _RADIUS * cy / d

    path = MPath([trim(x1), (cx, cy), trim(x2)], [MPath.MOVETO, MPath.CURVE3, MPath.CURVE3])
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", shrinkA=0, shrinkB=0, **style))
    return cx, height


def plot_cell(genotype: Genotype, cell: str = "normal", path: str | Path | None = None, *,
              title: str | None = None) -> Figure:
    """Draw ``cell`` (``"normal"`` or ``"reduce"``) of ``genotype``; save to ``path`` if given.

    States sit on one line (inputs, nodes, output); the first pair of each node arcs above the
    line and the second below, so labels of different edges never share a spot.

    :returns: the matplotlib ``Figure`` (not registered with pyplot; nothing global changes).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    pairs, concat = genotype.cell(cell), genotype.concat(cell)
    n = len(pairs) // 2
    states: list[int | str] = [0, 1, *range(2, n + 2), "out"]
    xpos = {s: float(x) for x, s in enumerate(states)}
    spans = [p // 2 + 2 - j for p, (_, j) in enumerate(pairs)] + [n + 2 - c for c in concat]
    top = _RISE * max(spans) + 0.45
    fig = Figure(figsize=(_UNIT_IN * (n + 3.2), _UNIT_IN * (2 * top + 0.3)))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(-0.6, n + 2.6)
    ax.set_ylim(-top, top + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")

    for s, x in xpos.items():
        kind = "input" if s in (0, 1) else "output" if s == "out" else "node"
        ax.add_patch(Circle((x, 0.0), _RADIUS, fc=_COLOURS[kind], ec="#333333", lw=1.0,
                            zorder=3))
        ax.text(x, 0.0, _node_label(s), ha="center", va="center", fontsize=12, zorder=4)

    for p, (op, j) in enumerate(pairs):
        node = p // 2 + 2
        side = 1.0 if p % 2 == 0 else -1.0
        span = xpos[node] - xpos[j]
        lx, ly = _edge(ax, xpos[j], xpos[node], side * _RISE * span, mutation_scale=13,
                       color="#444444", lw=1.1, zorder=2)
        ax.text(lx, ly, op, ha="center", va="center", fontsize=8, zorder=5,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="#999999", lw=0.6))
    for c in concat:
        span = xpos["out"] - xpos[c]
        _edge(ax, xpos[c], xpos["out"], -0.5 * _RISE * span if span > 1 else 0.0,
              mutation_scale=11, color="#aaaaaa", lw=0.9, ls="--", zorder=1)

    ax.text((n + 2) / 2, top + 0.1, title if title is not None else f"{cell} cell",
            ha="center", va="center", fontsize=11)
    if path is not None:
        fig.savefig(Path(path), bbox_inches="tight", pad_inches=0.1, dpi=150)
    return fig
