"""Pictures of BASE posteriors and runs: op heatmaps, forest plots, cells, training curves.

Every function draws on its own ``matplotlib.figure.Figure`` (nothing global changes, no
pyplot state), writes ``path`` with the format of its suffix (``.png``, ``.svg`` or ``.pdf``)
at exactly ``figsize * dpi`` pixels (no tight bounding box; constrained layout keeps labels in)
and returns the path.

Usage::

    idata = load_posterior(run_dir / "posterior.nc")
    plot_op_heatmap(idata, "heatmap_prior.png", task="prior")
    plot_op_forest(idata, "forest_normal.svg", cell="normal")
    plot_genotype(genotype, "cell_normal.png", cell="normal")
    plot_metrics(run_dir / "metrics.jsonl", "curves.png")
    # pyro_base.inference.evaluate.paired
    plot_adaptation_curves(evaluation.families, "curves.png")
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pyro_base.genotype import Genotype, plot_cell
from pyro_base.inference.run.run_dir import RunRecord, read_metrics

FORMATS = (".png", ".svg", ".pdf")


def _check(path: str | os.PathLike, dpi: int) -> Path:
    """Validate the output path and resolution before anything is drawn."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"image path {path} must end in one of {FORMATS}")
    if dpi < 10:
        raise ValueError(f"dpi must be >= 10, got {dpi}")
    return path


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _tasks(idata: Any) -> list[str]:
    """The posterior's tasks, then ``"prior"`` when ``idata`` has a ``prior`` group."""
    tasks = [str(t) for t in idata.posterior["task"].values]
    return tasks + (["prior"] if "prior" in idata.groups() else [])


def _check_task(idata: Any, task: str) -> None:
    tasks = _tasks(idata)
    if task not in tasks:
        raise ValueError(f"task {task!r} is not in the posterior; tasks: {tasks}")


def _mean_probs(idata: Any, task: str) -> np.ndarray:
    """``op_probs`` of ``task`` (averaged over chains), ``"prior"``: of the prior group (the
    prior the tasks adapted from): ``[cell, edge, op]``."""
    _check_task(idata, task)
    if task == "prior":
        return idata.prior["op_probs"].transpose("cell", "edge", "op").values
    probs = idata.constant_data["op_probs"].sel(task=task)
    return probs.transpose("chain", "cell", "edge", "op").values.mean(axis=0)


def _relaxed_draws(idata: Any, task: str) -> np.ndarray:
    """Every draw of ``z_relaxed`` for ``task``: ``[chain * draw, cell, edge, op]``."""
    z = idata.prior["z_relaxed"] if task == "prior" else \
        idata.posterior["z_relaxed"].sel(task=task)
    z = z.transpose("chain", "draw", "cell", "edge", "op").values
    return z.reshape(-1, *z.shape[2:])


def plot_op_heatmap(idata: Any, path: str | os.PathLike, *, task: str,
                    figsize: tuple[float, float] | None = None, dpi: int = 120) -> Path:
    """One ``edge x op`` heatmap of ``op_probs`` per cell type for ``task`` (``"prior"``: the
    prior ``q = W`` of the ``prior`` group), each square annotated with its probability; the
    largest per edge is outlined unless tied."""
    path = _check(path, dpi)
    probs = _mean_probs(idata, task)
    post = idata.posterior
    cells = [str(c) for c in post["cell"].values]
    edges = [str(e) for e in post["edge"].values]
    ops = [str(o) for o in post["op"].values]
    if figsize is None:
        figsize = (len(cells) * (0.62 * len(ops) + 1.9) + 1.0, 0.42 * len(edges) + 2.3)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, len(cells), squeeze=False)[0]
    vmax = max(float(probs.max()), 1e-6)
    image = None
    for ax, cell, p in zip(axes, cells, probs, strict=True):
        image = ax.imshow(p, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(edges)), edges, fontsize=8)
        ax.set_title(f"{cell} cell", fontsize=10)
        for e in range(len(edges)):
            for k in range(len(ops)):
                ax.text(k, e, f"{p[e, k]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if p[e, k] < 0.6 * vmax else "black")
            top2 = np.sort(p[e])[-2:]
            if len(top2) < 2 or top2[1] - top2[0] > 1e-6:   # a tie has no "best" op
                ax.add_patch(_outline(int(p[e].argmax()), e))
    fig.colorbar(image, ax=list(axes), label="op probability", shrink=0.9)
    fig.suptitle(f"op probabilities, task {task!r}", fontsize=11)
    return _save(fig, path, dpi)


def _outline(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, ec="#ff5a36", lw=1.6)


def plot_op_forest(idata: Any, path: str | os.PathLike, *, cell: str,
                   tasks: Sequence[str] | None = None, ncols: int = 3,
                   figsize: tuple[float, float] | None = None, dpi: int = 120) -> Path:
    """Op probabilities of ``cell`` across tasks: one panel per edge, one row per op, one
    marker per task (dot: ``softmax(phi)``; bar: central 90% of the relaxed weights drawn).
    ``tasks`` defaults to every task of the posterior, then ``"prior"`` if recorded.
    """
    path = _check(path, dpi)
    post = idata.posterior
    cells = [str(c) for c in post["cell"].values]
    if cell not in cells:
        raise ValueError(f"cell {cell!r} is not in the posterior; cells: {cells}")
    names = _tasks(idata) if tasks is None else list(tasks)
    c = cells.index(cell)
    edges = [str(e) for e in post["edge"].values]
    ops = [str(o) for o in post["op"].values]
    probs = np.stack([_mean_probs(idata, t)[c] for t in names])            # [T, E, K]
    z = np.stack([_relaxed_draws(idata, t)[:, c] for t in names], axis=1)  # [S, T, E, K]
    lo, hi = np.quantile(z, [0.05, 0.95], axis=0)
    ncols = max(1, min(ncols, len(edges)))
    nrows = math.ceil(len(edges) / ncols)
    if figsize is None:
        row_h = 0.18 * len(ops) * max(1.0, 0.45 * len(names)) + 0.7
        figsize = (3.3 * ncols + 1.2, row_h * nrows + 1.2)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    colours = [("#333333" if n == "prior" else f"C{i % 10}") for i, n in enumerate(names)]
    step = 0.8 / len(names)
    for e, ax in enumerate(axes.flat):
        if e >= len(edges):
            ax.set_visible(False)
            continue
        for i, name in enumerate(names):
            y = np.arange(len(ops)) + (i - (len(names) - 1) / 2) * step
            ax.hlines(y, lo[i, e], hi[i, e], color=colours[i], lw=1.2, alpha=0.6)
            ax.plot(probs[i, e], y, "o", ms=3.5, color=colours[i], label=name)
        ax.set_title(edges[e], fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.set_yticks(range(len(ops)), ops, fontsize=8)
        if e == 0:   # y is shared: invert once, first op on top
            ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    for col in range(ncols):   # x labels on the lowest visible panel of every column
        ax = axes[math.ceil((len(edges) - col) / ncols) - 1, col]
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("probability", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=8,
               ncols=min(len(names), 6), title="task", title_fontsize=8)
    fig.suptitle(f"{cell} cell: op probabilities by task (dot: softmax(phi), "
                 f"bar: 90% of relaxed draws)", fontsize=10, x=0.02, ha="left")
    return _save(fig, path, dpi)


def plot_genotype(genotype: Genotype, path: str | os.PathLike, *, cell: str = "normal",
                  title: str | None = None, dpi: int = 120) -> Path:
    """The cell diagram of ``genotype`` (:func:`pyro_base.genotype.plot_cell`); the image is
    the diagram's own figure size times ``dpi``."""
    path = _check(path, dpi)
    return _save(plot_cell(genotype, cell=cell, title=title), path, dpi)


def plot_metrics(metrics: str | os.PathLike | RunRecord | Sequence[dict[str, Any]],
                 path: str | os.PathLike, *, adapt_events: Sequence[dict[str, Any]] = (),
                 figsize: tuple[float, float] = (10.0, 7.0), dpi: int = 120) -> Path:
    """Training curves from ``metrics.jsonl`` (a path, a :class:`RunRecord`, or the records).

    Panels: the meta-training loss (per-datum negative ELBO) with its running mean and the
    mean query loss; the inner loss before and after adaptation (mean over tasks);
    architecture entropy and temperature; query accuracy of the ``"adapt"`` events per task.
    """
    path = _check(path, dpi)
    if isinstance(metrics, RunRecord):
        metrics, adapt_events = metrics.metrics, metrics.adapt_events
    elif isinstance(metrics, str | os.PathLike):
        metrics, adapt_events = read_metrics(metrics)
    rows = [m for m in metrics if "step" in m]
    step = np.array([m["step"] for m in rows], dtype=float)

    def series(key: str, rec: list[dict[str, Any]] | None = None) -> np.ndarray:
        return np.array([m.get(key, np.nan) for m in (rows if rec is None else rec)], float)

    def task_mean(key: str) -> np.ndarray:
        return np.array([np.nanmean([t.get(key, np.nan) for t in m["tasks"]])
                         if m.get("tasks") else np.nan for m in rows], float)

    fig = Figure(figsize=figsize, layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    loss = series("loss")
    a.plot(step, loss, color="C0", alpha=0.35, lw=0.8, label="loss (-ELBO / datum)")
    if len(loss):
        w = max(1, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        a.plot(step[w - 1:], smooth, color="C0", lw=1.6, label=f"running mean ({w})")
    a.plot(step, task_mean("query_loss"), color="C3", lw=1.0, label="query loss (mean)")
    b.plot(step, task_mean("inner_first"), color="C1", label="before adaptation")
    b.plot(step, task_mean("inner_last"), color="C2", label="after adaptation")
    c.plot(step, series("arch_entropy"), color="C4", label="arch entropy (nats)")
    c2 = c.twinx()
    c2.plot(step, series("temperature"), color="C7", ls="--", label="temperature")
    c2.set_ylabel("temperature", fontsize=9)
    for ax, title in ((a, "meta-training loss"), (b, "inner loss, mean over tasks"),
                      (c, "architecture entropy and temperature")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("meta-step", fontsize=9)
        ax.grid(alpha=0.3)
    lines = c.get_lines() + c2.get_lines()
    c.legend(lines, [ln.get_label() for ln in lines], fontsize=8)
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    _accuracy_panel(d, list(adapt_events))
    return _save(fig, path, dpi)


def _accuracy_panel(ax: Any, events: list[dict[str, Any]]) -> None:
    ax.set_title("query accuracy after adaptation", fontsize=10)
    events = [e for e in events if "query_accuracy" in e]
    if not events:
        ax.text(0.5, 0.5, "no adapt events in metrics.jsonl", ha="center", va="center",
                transform=ax.transAxes, fontsize=9, color="#666666")
        ax.set_axis_off()
        return
    tasks = list(dict.fromkeys(str(e.get("task", "?")) for e in events))
    steps = sorted({int(e.get("steps", 0)) for e in events})
    width = 0.8 / len(steps)
    for j, s in enumerate(steps):
        acc = {str(e.get("task", "?")): e["query_accuracy"] for e in events
               if int(e.get("steps", 0)) == s}
        x = np.arange(len(tasks)) + (j - (len(steps) - 1) / 2) * width
        ax.bar(x, [acc.get(t, np.nan) for t in tasks], width, label=f"{s} steps",
               color=f"C{j % 10}")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="adaptation", title_fontsize=8)


def plot_adaptation_curves(families: dict[str, dict[str, Any]], path: str | os.PathLike, *,
                           dpi: int = 120) -> Path:
    """Query accuracy against adaptation steps, one panel per family, one line per arm.

    ``families`` is :func:`pyro_base.inference.evaluate.paired.summarize`'s output: per family
    ``steps`` and
    ``accuracy[arm]`` with ``mean``, ``lo`` and ``hi`` per step count (the band is the 95%
    bootstrap interval of the arm's mean over tasks).
    """
    path = _check(path, dpi)
    if not families:
        raise ValueError("families is empty: nothing to plot")
    ncols = min(3, len(families))
    nrows = math.ceil(len(families) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, (family, summary) in zip(axes.flat, families.items(), strict=False):
        steps = np.asarray(summary["steps"], float)
        for j, (arm, acc) in enumerate(summary["accuracy"].items()):
            ax.plot(steps, acc["mean"], marker="o", ms=3, color=f"C{j}", label=arm)
            ax.fill_between(steps, acc["lo"], acc["hi"], color=f"C{j}", alpha=0.2, lw=0)
        ax.set_title(f"{family} ({summary['n_tasks']} tasks)", fontsize=10)
        ax.set_xlabel("adaptation steps", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("query accuracy", fontsize=9)
    for ax in list(axes.flat)[len(families):]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize=8)
    return _save(fig, path, dpi)
