"""Summaries, verdicts and figures of the experiment of :mod:`pyro_base.inference.run.experiment`.

* :func:`summarise`: per target and method, test accuracy mean and std over training seeds and
  the search cost;
* :func:`claim_verdict`: does BASE adaptation reach DARTS-from-scratch accuracy (10x budget)
  at <= 1/10 of its search cost? "Reaches" means ``mean_base >= mean_darts - tol`` with
  ``tol = max(std_darts, 0.01)``; the cost test compares the budgets in supernet passes
  (1/10 by construction), and the measured seconds and images ratios are reported beside it
  (``cheap_measured``: both <= 1/10);
* :func:`op_preference`: the adapted posterior's op probabilities averaged over edges and cells,
  and whether the family's favoured ops get the most mass;
* :func:`plot_accuracy_vs_cost`, :func:`plot_family_heatmaps`.

Usage::

    summary = summarise(rows)
    verdict = claim_verdict(summary["motif"], meta_seconds_per_target=12.0)
    pref = op_preference(posterior.op_probs(), space.ops, "motif")
    plot_accuracy_vs_cost(summary, "accuracy_vs_cost.png")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_base.inference.run.experiment import PUBLISHED

# Ops each procedural family was designed to favour (measured with single-op nets).
FAVOURED: dict[str, tuple[str, ...]] = {
    "motif": ("sep_conv_3x3", "sep_conv_5x5"),
    "dilated_motif": ("dil_conv_3x3", "dil_conv_5x5"),
    "relation": ("sep_conv_5x5", "dil_conv_5x5"),
    "cooccurrence": ("max_pool_3x3",),
    "colour": (),          # every op ties
}
NOTES = {"cooccurrence": "the generator's own measurements also find convs beating max_pool "
                         "once they have enough data, so this expectation is weak",
         "colour": "no preference expected: holds when the op probabilities are flat "
                   "(max - min < 0.05)"}
MARKERS = {"base_adapt": "o", "base_prior": "s", "darts": "^", "darts_10x": "v", "snas": "D",
           "random": "P", "DARTS_V2": "*", "BASE_CIFAR": "X", "BASE_IMAGENET": "h"}


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{target: {method: {mean, std, n, search_seconds, search_images}}}`` (std: ddof=1)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        cell = out.setdefault(r["target"], {}).setdefault(r["method"], {
            "acc": [], "search_seconds": r["search_seconds"],
            "search_images": r["search_images"], "search_passes": r["search_passes"]})
        cell["acc"].append(r["accuracy"])
    for methods in out.values():
        for cell in methods.values():
            acc = np.asarray(cell.pop("acc"), float)
            cell.update(mean=float(acc.mean()), n=len(acc),
                        std=float(acc.std(ddof=1)) if len(acc) > 1 else 0.0)
    return out


def claim_verdict(methods: Mapping[str, Mapping[str, Any]], *,
                  meta_seconds_per_target: float = 0.0,
                  meta_images_per_target: float = 0.0) -> dict[str, Any]:
    """The claim on one target, with the numbers it rests on."""
    base, darts = methods["base_adapt"], methods["darts_10x"]
    tol = max(darts["std"], 0.01)
    reaches = base["mean"] >= darts["mean"] - tol
    ratio_s = base["search_seconds"] / max(darts["search_seconds"], 1e-9)
    ratio_i = base["search_images"] / max(darts["search_images"], 1)
    amort_s = (base["search_seconds"] + meta_seconds_per_target) / max(
        darts["search_seconds"], 1e-9)
    amort_i = (base["search_images"] + meta_images_per_target) / max(darts["search_images"], 1)
    ratio_p = base["search_passes"] / max(darts["search_passes"], 1)
    cheap = ratio_p <= 0.1 + 1e-9
    return {"reaches": bool(reaches), "cheap": bool(cheap), "holds": bool(reaches and cheap),
            "cheap_measured": bool(ratio_s <= 0.1 and ratio_i <= 0.1),
            "cost_ratio_passes": ratio_p,
            "holds_amortised": bool(reaches and amort_s <= 0.1 and amort_i <= 0.1),
            "base_mean": base["mean"], "darts_mean": darts["mean"], "tolerance": tol,
            "cost_ratio_seconds": ratio_s, "cost_ratio_images": ratio_i,
            "amortised_ratio_seconds": amort_s, "amortised_ratio_images": amort_i,
            "beats_darts_1x": bool(base["mean"] >= methods["darts"]["mean"]
                                   - max(methods["darts"]["std"], 0.01))}


def op_preference(op_probs: Mapping[str, torch.Tensor], ops: Sequence[str],
                  family: str) -> dict[str, Any]:
    """Mean op probability over edges and cell types ('none' left out, then renormalised),
    and whether the family's favoured ops hold the most probable op."""
    p = torch.stack([v.detach().float().cpu() for v in op_probs.values()]).mean(dim=(0, 1))
    keep = [i for i, o in enumerate(ops) if o != "none"]
    p = p[keep] / p[keep].sum()
    names = [ops[i] for i in keep]
    mean = {o: float(v) for o, v in zip(names, p, strict=True)}
    top = max(mean, key=mean.get)
    fav = FAVOURED.get(family)
    out: dict[str, Any] = {"family": family, "mean_probs": mean, "top_op": top,
                           "favoured": list(fav) if fav is not None else None,
                           "note": NOTES.get(family, "")}
    if fav is None:
        out.update(holds=None, favoured_mass=None, uniform_mass=None)
    elif not fav:
        spread = max(mean.values()) - min(mean.values())
        out.update(holds=bool(spread < 0.05), spread=spread, favoured_mass=None,
                   uniform_mass=None)
    else:
        mass = sum(mean.get(o, 0.0) for o in fav)
        out.update(holds=bool(top in fav), favoured_mass=mass,
                   uniform_mass=len([o for o in fav if o in mean]) / len(mean))
    return out


def plot_accuracy_vs_cost(summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
                          path: str | os.PathLike, *, meta_seconds_per_target: float = 0.0,
                          dpi: int = 110) -> Path:
    """One panel per target: test accuracy (mean, std bar) vs search seconds (log x). Methods
    that cost nothing here (prior only, published cells) sit at a floor marked on the axis;
    a hollow circle adds the amortised meta-training cost to BASE adaptation."""
    path = Path(path)
    targets = list(summary)
    positive = [m["search_seconds"] for t in targets for m in summary[t].values()
                if m["search_images"] > 0]
    floor = 10 ** math.floor(math.log10(min(positive) / 3)) if positive else 0.01
    ncols = min(3, len(targets))
    nrows = math.ceil(len(targets) / ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.4 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, target in zip(axes.flat, targets, strict=False):
        for i, (method, m) in enumerate(summary[target].items()):
            x = m["search_seconds"] if m["search_images"] > 0 else floor
            ax.errorbar(x, m["mean"], yerr=m["std"], fmt=MARKERS.get(method, "o"), ms=7,
                        color=f"C{i % 10}", label=method, capsize=2)
            if method == "base_adapt" and meta_seconds_per_target > 0:
                ax.plot(m["search_seconds"] + meta_seconds_per_target, m["mean"], "o", ms=9,
                        mfc="none", color=f"C{i % 10}", label="base_adapt + amortised meta")
        ax.set_xscale("log")
        ax.axvline(floor, color="#999999", lw=0.8, ls=":")
        ax.set_title(target, fontsize=10)
        ax.set_xlabel(f"search seconds (log; at {floor:g}: no search here)", fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(targets):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=8)
    fig.suptitle("accuracy vs. search cost (mean ± std over training seeds)", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def plot_family_heatmaps(model: Any, posteriors: Mapping[str, Any], targets: Sequence[Any],
                         out_dir: str | os.PathLike, *, temperature: float) -> list[Path]:
    """Per target, the ``edge x op`` heatmap of the adapted posterior's op probabilities
    (:func:`pyro_base.inference.report.plots.plot_op_heatmap` on
    :func:`pyro_base.inference.posterior.draws.posterior_draws`)."""
    from pyro_base.inference.posterior.draws import posterior_draws, to_inference_data
    from pyro_base.inference.report.plots import plot_op_heatmap

    chosen = [t for t in targets if t.key in posteriors]
    if not chosen:
        return []
    tasks = [t.task for t in chosen]
    draws = posterior_draws(model, {t.task.name: posteriors[t.key] for t in chosen}, tasks,
                            num_samples=1, temperature=temperature, seed=0)
    idata = to_inference_data(draws)
    return [plot_op_heatmap(idata, Path(out_dir) / f"heatmap_{t.key}.png", task=t.task.name)
            for t in chosen]


def _fmt_cost(seconds: float, images: int, published: bool) -> tuple[str, str]:
    if published:
        return "published", "-"
    return f"{seconds:.1f}", f"{images:,}"


def write_markdown(path: str | os.PathLike, *, summary: Mapping[str, Any],
                   verdicts: Mapping[str, Mapping[str, Any]],
                   preferences: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any],
                   header: Sequence[str] = ()) -> Path:
    """``results.md``: one table per target, the cost claim and the op-preference check."""
    n_targets = max(len(summary), 1)
    lines = ["# BASE meta-prior vs. search from scratch", "", *header, "",
             f"Meta-training (once, shared by all {len(summary)} targets): "
             f"{meta['seconds']:.1f} s, {meta['images']:,} images "
             f"({meta['seconds'] / n_targets:.1f} s and {meta['images'] / n_targets:,.0f} "
             "images amortised per target). BASE search costs below exclude it.", ""]
    for target, methods in summary.items():
        lines += [f"## {target}", "", "| method | test acc (mean ± std, n) | search s | "
                  "search images |", "|---|---|---|---|"]
        for method, m in methods.items():
            s, im = _fmt_cost(m["search_seconds"], m["search_images"],
                              method in PUBLISHED)
            lines.append(f"| {method} | {m['mean']:.3f} ± {m['std']:.3f} ({m['n']}) | {s} | "
                         f"{im} |")
        v = verdicts[target]
        word = "HOLDS" if v["holds"] else "does NOT hold"
        lines += ["", f"Claim (BASE adaptation reaches DARTS-from-scratch-10x accuracy at <= "
                      f"1/10 of its search cost): **{word}** — BASE {v['base_mean']:.3f} vs "
                      f"DARTS-10x {v['darts_mean']:.3f} (tolerance {v['tolerance']:.3f}: "
                      f"{'reaches' if v['reaches'] else 'falls short'}); cost ratio "
                      f"{v['cost_ratio_passes']:.3f} in supernet passes (the budget), measured "
                      f"{v['cost_ratio_seconds']:.3f} in seconds and "
                      f"{v['cost_ratio_images']:.3f} in images "
                      f"({'both' if v['cheap_measured'] else 'not both'} <= 0.1); with amortised "
                      f"meta-training "
                      f"{v['amortised_ratio_seconds']:.3f} / {v['amortised_ratio_images']:.3f} "
                      f"({'holds' if v['holds_amortised'] else 'does not hold'}). "
                      f"Against DARTS at the same budget: "
                      f"{'reaches' if v['beats_darts_1x'] else 'falls short'}.", ""]
        p = preferences.get(target)
        if p is not None and p.get("holds") is not None:
            probs = ", ".join(f"{o} {q:.3f}" for o, q in sorted(
                p["mean_probs"].items(), key=lambda kv: -kv[1]))
            if p["favoured"]:
                what = (f"favoured {p['favoured']} hold {p['favoured_mass']:.3f} of the mass "
                        f"(uniform share {p['uniform_mass']:.3f}); top op {p['top_op']}")
            else:
                what = f"spread max - min {p['spread']:.3f}"
            lines += [f"Op preference of the adapted posterior: "
                      f"**{'holds' if p['holds'] else 'does not hold'}** — {what}. "
                      f"Mean op probabilities: {probs}."
                      + (f" Note: {p['note']}." if p["note"] else ""), ""]
    held = [t for t, v in verdicts.items() if v["holds"]]
    pref = [t for t, p in preferences.items() if p.get("holds")]
    judged = [t for t, p in preferences.items() if p.get("holds") is not None]
    lines += ["## Summary", "",
              f"- Cost claim holds on {len(held)} of {len(verdicts)} targets: {held or 'none'}.",
              f"- Op preference holds on {len(pref)} of {len(judged)} procedural targets: "
              f"{pref or 'none'}.", ""]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path
