"""Evaluations of several meta-training runs of one configuration, pooled; and two
configurations compared, paired by seed and task.

One meta-training run is one draw of the configuration: the meta-step is noisy enough that the
seed (even float rounding) decides which prior a run ends with. A claim about a configuration
therefore pools runs with different ``seed``\\ s, each evaluated by
:func:`~pyro_base.inference.evaluate.paired.evaluate_run` on the same held-out tasks. The
interval is a two-level percentile bootstrap: resample the runs, then the tasks within each
resampled run, so it holds the run-to-run spread as well as the task-to-task one (with 3 runs it
is wide, as it should be).

:func:`pool_evaluations` gives, per family and step count, the mean over runs x tasks of each
arm's query accuracy and of the paired gains of
:func:`~pyro_base.inference.evaluate.summary.summarize`. :func:`compare_evaluations` gives the
per-(seed, task) difference of a candidate configuration's ``meta`` accuracy and of its gain
over the untrained start against a baseline configuration's: runs are matched by their
meta-training seed, tasks by family and index, so both sides saw the same tasks, splits and
inner-loop seeds.

Usage::

    runs = ["runs/a_s0", "runs/a_s1", "runs/a_s2"]
    pooled = pool_evaluations([load_evaluation(r) for r in runs])
    diff = compare_evaluations([load_evaluation(r) for r in runs],
                               [load_evaluation(r) for r in ["runs/b_s0", "runs/b_s1", ...]])
    print(format_pooled(pooled), format_comparison(diff))
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pyro_base.inference.evaluate.summary import GAINS, SELECT, select_rule

__all__ = ["compare_evaluations", "format_comparison", "format_pooled", "load_evaluation",
           "pool_evaluations", "restrict", "two_level_interval"]


def load_evaluation(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN_DIR/evaluation/evaluation.json`` with the run's meta-training ``seed`` (from
    ``config.yaml``) added to its settings as ``run_seed``; a missing file is a
    ``FileNotFoundError`` naming it."""
    run_dir = Path(run_dir)
    path = run_dir / "evaluation" / "evaluation.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: evaluate the run first "
                                f"(pyro-base evaluate {run_dir})")
    data = json.loads(path.read_text())
    config = run_dir / "config.yaml"
    seed = yaml.safe_load(config.read_text()).get("seed") if config.is_file() else None
    data["settings"] = {**data["settings"], "run_seed": seed, "run_dir": str(run_dir)}
    return data


def restrict(evaluation: dict[str, Any], *, steps: Sequence[int] | None = None,
             tasks_per_family: int | None = None) -> dict[str, Any]:
    """``evaluation`` with only the step counts ``steps`` and the first ``tasks_per_family``
    tasks of each family (a larger evaluation read as a smaller one: the paired seeds of a
    task and step do not depend on the others)."""
    have = list(evaluation["settings"]["steps"])
    steps = have if steps is None else [int(k) for k in steps]
    missing = [k for k in steps if k not in have]
    if missing:
        raise ValueError(f"{evaluation['settings'].get('run_dir')}: no step counts {missing} "
                         f"(it has {have})")
    keep = [have.index(k) for k in steps]
    tasks = [t for t in evaluation["tasks"]
             if tasks_per_family is None or t["task_index"] < tasks_per_family]
    tasks = [{**t, **{key: {a: [v[i] for i in keep] for a, v in t[key].items()}
                      for key in ("accuracy", "support_accuracy") if key in t},
              **({"selection": restrict_selection(t["selection"], steps)}
                 if "selection" in t else {})}
             for t in tasks]
    return {**evaluation, "settings": {**evaluation["settings"], "steps": steps},
            "tasks": tasks}


def restrict_selection(sel: dict[str, Any], steps: list[int]) -> dict[str, Any]:
    """A task's ``selection`` record (arm ``select``) at the step counts ``steps`` only (one
    that chose once, at ``select_at``, as it is)."""
    if "select_at" in sel:
        return sel
    keep = [sel["steps"].index(k) for k in steps]
    return {**sel, "steps": steps, "chosen": {str(k): sel["chosen"][str(k)] for k in steps},
            **{key: {a: [v[i] for i in keep] for a, v in sel[key].items()}
               for key in ("heldout_accuracy", "heldout_loglik")}}


def two_level_interval(values: Sequence[np.ndarray], *, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of ``values`` (one array [tasks, ...] per run, pooled over runs and tasks) and its
    two-level percentile bootstrap interval: ``n_boot`` times, draw the runs with replacement,
    then within each drawn run its tasks with replacement."""
    runs = [np.asarray(v, dtype=float) for v in values]
    if not runs or any(len(v) == 0 for v in runs):
        raise ValueError("values must hold at least one run, each with at least one task")
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(runs), len(runs))
        boot.append(np.concatenate([runs[r][rng.integers(0, len(runs[r]), len(runs[r]))]
                                    for r in picked]).mean(0))
    lo, hi = np.percentile(np.stack(boot), [50 * (1 - level), 50 * (1 + level)], axis=0)
    return np.concatenate(runs).mean(0), lo, hi


def _stat(values: Sequence[np.ndarray], n_boot: int, seed: int) -> dict[str, list[float]]:
    mean, lo, hi = two_level_interval(values, n_boot=n_boot, seed=seed)
    return {"mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def _by_family(evaluation: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for task in evaluation["tasks"]:
        out.setdefault(task["family"], []).append(task)
    return {f: sorted(ts, key=lambda t: t["task_index"]) for f, ts in out.items()}


def _check_same_protocol(evaluations: Sequence[dict[str, Any]]) -> tuple[list[int], list[str]]:
    if not evaluations:
        raise ValueError("need at least one evaluation")
    first = evaluations[0]["settings"]
    for e in evaluations[1:]:
        s = e["settings"]
        for key in ("steps", "seed", "task_source", "families"):
            if s.get(key) != first.get(key):
                raise ValueError(f"evaluations differ in {key}: {first.get('run_dir')} has "
                                 f"{first.get(key)!r}, {s.get('run_dir')} has {s.get(key)!r}")
    arms = [a for a in first["arms"] if all(a in e["settings"]["arms"] for e in evaluations)]
    if SELECT in arms:
        chosen_from = {select_rule(e["settings"]) for e in evaluations}
        if len(chosen_from) > 1:
            raise ValueError(f"the evaluations' {SELECT!r} arms choose between different "
                             "starts, by different criteria or at different step counts: "
                             f"{sorted(chosen_from, key=str)}")
    return list(first["steps"]), arms


def pool_evaluations(evaluations: Sequence[dict[str, Any]], *, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Per family: each arm's accuracy and each paired gain, pooled over the runs (see the
    module docstring); the evaluations must share steps, seed, task source and families."""
    steps, arms = _check_same_protocol(evaluations)
    per_run = [_by_family(e) for e in evaluations]
    families: dict[str, Any] = {}
    for fi, family in enumerate(per_run[0]):
        rows = [r[family] for r in per_run]
        acc = {a: [np.array([t["accuracy"][a] for t in ts]) for ts in rows] for a in arms}
        families[family] = {
            "n_runs": len(rows), "n_tasks": [len(ts) for ts in rows], "steps": steps,
            "accuracy": {a: _stat(acc[a], n_boot, seed + fi) for a in arms},
            "gains": {f"{a}-{b}": _stat([x - y for x, y in zip(acc[a], acc[b], strict=True)],
                                        n_boot, seed + fi)
                      for a, b in GAINS if a in arms and b in arms}}
    return {"runs": [e["settings"]["run_dir"] for e in evaluations],
            "run_seeds": [e["settings"].get("run_seed") for e in evaluations],
            "steps": steps, "arms": arms, "n_boot": n_boot, "families": families}


def compare_evaluations(baseline: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]],
                        *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The candidate configuration against the baseline, paired by run seed and task: per
    family, the mean difference of the ``meta`` arm's accuracy (``meta``) and of its gain over
    the untrained start (``gain``), with two-level bootstrap intervals over seeds and tasks.
    Both sides need runs with the same meta-training seeds and tasks."""
    steps, arms = _check_same_protocol([*baseline, *candidate])
    if "meta" not in arms:
        raise ValueError("both configurations' evaluations need the 'meta' arm")

    def by_seed(side: Sequence[dict[str, Any]], name: str) -> dict[Any, dict[str, Any]]:
        seeds = [e["settings"].get("run_seed") for e in side]
        if None in seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"{name}: each run needs its own meta-training seed, got {seeds}")
        return dict(zip(seeds, side, strict=True))

    base, cand = by_seed(baseline, "baseline"), by_seed(candidate, "candidate")
    if set(base) != set(cand):
        raise ValueError(f"baseline seeds {sorted(base)} and candidate seeds {sorted(cand)} "
                         f"differ: the comparison pairs runs by seed")
    seeds = sorted(base)
    base_tasks = {s: _by_family(base[s]) for s in seeds}
    cand_tasks = {s: _by_family(cand[s]) for s in seeds}
    families: dict[str, Any] = {}
    for fi, family in enumerate(base_tasks[seeds[0]]):
        meta, gain = [], []
        for s in seeds:
            b, c = base_tasks[s][family], cand_tasks[s][family]
            n = min(len(b), len(c))
            if [t["task"] for t in b[:n]] != [t["task"] for t in c[:n]]:
                raise ValueError(f"seed {s}, family {family}: the runs' tasks differ")
            acc_b = np.array([t["accuracy"]["meta"] for t in b[:n]])
            acc_c = np.array([t["accuracy"]["meta"] for t in c[:n]])
            meta.append(acc_c - acc_b)
            if "untrained" in arms:
                gain.append((acc_c - np.array([t["accuracy"]["untrained"] for t in c[:n]]))
                            - (acc_b - np.array([t["accuracy"]["untrained"] for t in b[:n]])))
        families[family] = {"n_tasks": [len(m) for m in meta], "steps": steps,
                            "meta": _stat(meta, n_boot, seed + fi),
                            "gain": _stat(gain, n_boot, seed + fi) if gain else None}
    return {"baseline": [base[s]["settings"]["run_dir"] for s in seeds],
            "candidate": [cand[s]["settings"]["run_dir"] for s in seeds],
            "run_seeds": seeds, "steps": steps, "n_boot": n_boot, "families": families}


def _cell(stat: dict[str, list[float]] | None, j: int) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean'][j]:+.3f} [{stat['lo'][j]:+.3f}, {stat['hi'][j]:+.3f}]"


def _table(title: str, steps: list[int], rows: dict[str, dict[str, list[float]] | None]) -> str:
    """``title``, then one row per family of its statistic at each step count."""
    lines = [title, "", "| family | " + " | ".join(f"{k} steps" for k in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    lines += [f"| {family} | " + " | ".join(_cell(stat, j) for j in range(len(steps))) + " |"
              for family, stat in rows.items()]
    return "\n".join(lines)


def format_pooled(pooled: dict[str, Any]) -> str:
    """Markdown tables of the pooled paired gains, one per gain the pooled arms have (e.g. the
    meta-prior over the untrained start; the default pipeline's ``select`` over it)."""
    names = [f"{a}-{b}" for a, b in GAINS
             if any(f"{a}-{b}" in s["gains"] for s in pooled["families"].values())]
    if not names:
        return (f"pooled over {len(pooled['runs'])} runs: no paired gain (arms "
                f"{pooled['arms']})")
    return "\n\n".join(
        _table(f"pooled over {len(pooled['runs'])} runs (seeds {pooled['run_seeds']}): mean "
               f"gain {name.replace('-', ' over ')}, 95% two-level bootstrap interval (runs, "
               f"then tasks)", pooled["steps"],
               {f: s["gains"].get(name) for f, s in pooled["families"].items()})
        for name in names)


def format_comparison(diff: dict[str, Any]) -> str:
    """A markdown table of the candidate's meta accuracy minus the baseline's."""
    return _table(f"candidate minus baseline, paired by seed ({diff['run_seeds']}) and task: "
                  f"the meta-prior's query accuracy, 95% two-level bootstrap interval (seeds, "
                  f"then tasks)", diff["steps"],
                  {f: s["meta"] for f, s in diff["families"].items()})
