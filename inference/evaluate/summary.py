"""The statistics of the paired held-out evaluation: per family, each arm's mean query
accuracy and the paired gains between arms, with percentile bootstrap intervals over tasks,
and their markdown table.

Usage::

    mean, lo, hi = bootstrap_interval(gains, n_boot=2000, seed=[0, family_index])
    families = summarize(records, steps=(0, 20), arms=ARMS)
    print(format_summary(result))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyro_base import defaults

ARCH_ONLY = "meta_arch_untrained_weights"  # the architecture prior alone: on request
SELECT = "select"  # per task, one of SELECT_FROM's arms, chosen on held-out support data
ENSEMBLE = "ensemble"  # per task, the averaged posteriors of ENSEMBLE_FROM's starts
ARMS = ("meta", "untrained", "meta_weights_uniform_arch", ARCH_ONLY, SELECT, ENSEMBLE)
DEFAULT_ARMS = ARMS[:3]
# the arm that adapts from each start of pyro_base.inference.run.factory.TRANSFERS
TRANSFER_ARMS = {"all": "meta", "none": "untrained", "weights": "meta_weights_uniform_arch",
                 "architecture": ARCH_ONLY}
SELECT_FROM = defaults.SELECT_FROM  # the default candidates of SELECT, as adapt's
SELECT_CRITERION = defaults.SELECT_CRITERION  # the default held-out score of SELECT
ENSEMBLE_FROM = defaults.ENSEMBLE_FROM  # the default members of ENSEMBLE, as adapt's
GAINS = (("meta", "untrained"), ("meta_weights_uniform_arch", "untrained"),
         ("meta", "meta_weights_uniform_arch"), (ARCH_ONLY, "untrained"),
         (SELECT, "untrained"), (SELECT, "meta"), (ENSEMBLE, "untrained"), (ENSEMBLE, "meta"),
         (ENSEMBLE, SELECT))


EACH = "each"  # the select arm chooses again at every step count of the curve


def select_rule(settings: dict[str, Any]) -> tuple[tuple[str, ...], str, int | str]:
    """The starts an evaluation's ``select`` arm chose between, its criterion and the step
    count it chose at (:data:`EACH`: at every step count). An evaluation written before they
    were recorded chose between ``all`` and ``none`` by accuracy at each step count."""
    return (tuple(settings.get("select_from", ("all", "none"))),
            settings.get("select_criterion", "accuracy"), settings.get("select_at", EACH))


# the ops each procedural family was designed to favour (pyro_base/tasks/procedural.py)
PREFERRED: dict[str, tuple[str, ...] | None] = {
    "motif": ("sep_conv_3x3", "sep_conv_5x5"),
    "dilated_motif": ("dil_conv_3x3", "dil_conv_5x5"),
    "relation": ("sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"),
    "cooccurrence": None,
    "colour": None,
}

@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_run` computed and wrote (``path`` is the output folder)."""

    settings: dict[str, Any]
    families: dict[str, dict[str, Any]]
    tasks: list[dict[str, Any]]
    seconds: float
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "seconds": self.seconds,
                "families": self.families, "tasks": self.tasks}


def bootstrap_interval(values: Any, *, n_boot: int = 2000, seed: int | Sequence[int] = 0,
                       level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 (tasks) and its percentile bootstrap interval.

    ``n_boot`` resamples of the rows, drawn as ``default_rng(seed).integers(0, n, (n_boot, n))``
    (the same draws for every column and every call with this seed: paired statistics).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 0 or len(v) == 0:
        raise ValueError(f"values must have at least one row, got shape {v.shape}")
    idx = np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))
    boot = v[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return v.mean(axis=0), lo, hi


def summarize(records: list[dict[str, Any]], *, steps: Sequence[int], arms: Sequence[str],
              seed: int = 0, n_boot: int = 2000) -> dict[str, dict[str, Any]]:
    """Per family: mean accuracy per arm and the paired gains, with bootstrap intervals."""
    def stats(values: np.ndarray, fi: int) -> dict[str, list[float]]:
        mean, lo, hi = bootstrap_interval(values, n_boot=n_boot, seed=[seed, fi])
        return {"mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}

    out: dict[str, dict[str, Any]] = {}
    for fi, family in enumerate(dict.fromkeys(r["family"] for r in records)):
        rows = [r for r in records if r["family"] == family]
        acc = {a: np.array([r["accuracy"][a] for r in rows]) for a in arms}
        matches = [r["matches_preference"] for r in rows if r["matches_preference"] is not None]
        preferred = PREFERRED.get(family)
        match_by_arm = {a: float(np.mean([r["top_op"][a].get("normal") in preferred
                                          for r in rows]))
                        for a in ("meta", SELECT, ENSEMBLE) if a in arms and preferred is not None}
        out[family] = {
            "n_tasks": len(rows), "steps": list(steps),
            "accuracy": {a: stats(acc[a], fi) for a in arms},
            "gains": {f"{a}-{b}": stats(acc[a] - acc[b], fi) for a, b in GAINS
                      if a in arms and b in arms},
            "preferred_ops": PREFERRED.get(family),
            **({"support_accuracy": {a: stats(np.array([r["support_accuracy"][a] for r in rows]),
                                              fi) for a in arms}}
               if all("support_accuracy" in r for r in rows) else {}),
            "match_fraction": float(np.mean(matches)) if matches else None,
            "match_fraction_by_arm": match_by_arm}
    return out


def format_summary(result: EvaluationResult) -> str:
    """A markdown table: per family and step count, the arms' mean query accuracy and the
    paired gains over the untrained start with their 95% intervals (the on-request arms'
    columns where they were evaluated), and a table of support accuracy where it was read."""
    def cell(stat: dict[str, list[float]] | None, j: int, interval: bool = False) -> str:
        if stat is None:
            return "-"
        text = f"{stat['mean'][j]:+.3f}" if interval else f"{stat['mean'][j]:.3f}"
        return text + (f" [{stat['lo'][j]:+.3f}, {stat['hi'][j]:+.3f}]" if interval else "")

    labels = {"meta": "meta", "untrained": "untrained", "meta_weights_uniform_arch":
              "uniform-arch", ARCH_ONLY: "arch-only", SELECT: "select", ENSEMBLE: "ensemble"}
    gain_labels = {"meta": "meta-untrained", "meta_weights_uniform_arch": "weights-only",
                   ARCH_ONLY: "arch-only", SELECT: "select-untrained",
                   ENSEMBLE: "ensemble-untrained"}
    evaluated = {a for s in result.families.values() for a in s["accuracy"]}
    arms = [*DEFAULT_ARMS, *(a for a in (ARCH_ONLY, SELECT, ENSEMBLE) if a in evaluated)]
    gains = [a for a in gain_labels if a in arms]
    lines = ["| family | steps | " + " | ".join(labels[a] for a in arms) + " | "
             + " | ".join(f"gain {gain_labels[a]} [lo, hi]" for a in gains) + " |",
             "|---|---:|" + "---:|" * (len(arms) + len(gains))]
    for family, s in result.families.items():
        acc, gain = s["accuracy"], s["gains"]
        for j, k in enumerate(s["steps"]):
            lines.append(f"| {family} | {k} | " + " | ".join(
                [cell(acc.get(a), j) for a in arms]
                + [cell(gain.get(f"{a}-untrained"), j, True) for a in gains]) + " |")
    fit = {f: s["support_accuracy"] for f, s in result.families.items()
           if "support_accuracy" in s}
    if fit:
        arms = [a for a in ARMS if a in next(iter(fit.values()))]
        lines += ["", "| family | steps | " + " | ".join(f"support accuracy {a}" for a in arms)
                  + " |", "|---|---:|" + "---:|" * len(arms)]
        for family, f in fit.items():
            for j, k in enumerate(result.families[family]["steps"]):
                lines.append(f"| {family} | {k} | "
                             + " | ".join(cell(f[a], j) for a in arms) + " |")
    with_select = any(SELECT in s.get("match_fraction_by_arm", {})
                      for s in result.families.values())
    lines += ["", "| family | designed ops | meta normal-cell top op matches |"
              + (" select's |" if with_select else ""),
              "|---|---|---:|" + ("---:|" if with_select else "")]
    for family, s in result.families.items():
        frac = s["match_fraction"]
        sel = s.get("match_fraction_by_arm", {}).get(SELECT)
        lines.append(f"| {family} | {', '.join(s['preferred_ops'] or ['-'])} | "
                     f"{'-' if frac is None else f'{frac:.2f}'} |"
                     + (f" {'-' if sel is None else f'{sel:.2f}'} |" if with_select else ""))
    return "\n".join(lines)
