"""The averaged posteriors of three starts against the default choice of one, paired.

    python docs/results/ensemble/compare.py

Each ``evaluation_seedS.json`` here is the later default draw of seed ``S`` in the README's
"One run at a time" (``python scripts/meta_svi.py --seed S``, the same ``W``: its
``start_digest``), evaluated with

    python scripts/evaluate.py RUN --arms untrained select ensemble --reuse --workers 2

where ``RUN/evaluation/evaluation.json`` held the run's committed evaluation (seeds 3 and 4:
``../select_once_draws/evaluation_seedS.json``; seeds 1 and 2:
``../arch_refit_40_vs_20/refit20_seedS.json``), so the select arm is read from it and the
untrained and ensemble arms are computed (the untrained start is also a member of the
ensemble: one adaptation serves both). The ensemble averages the posterior predictives of the
whole meta-prior, its architecture prior with ``W_0``'s weights and ``W_0`` itself, each
adapted on the whole support set with the seeds of its own arm. Per run, family and step count,
mean [95% bootstrap interval over the 20 tasks] of each arm's gain over the untrained start and
of ensemble minus select; then pooled over the runs with the library's two-level bootstrap
(runs, then tasks); and the goal's two parts per run and pooled.
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import two_level_interval
from pyro_base.inference.evaluate.summary import PREFERRED, bootstrap_interval

HERE = Path(__file__).parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
BUDGET, GOAL = 20, 0.10
PAIRS = (("select", "untrained"), ("ensemble", "untrained"), ("ensemble", "select"))


def cells(steps: list[int], mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> str:
    return " | ".join(f"{s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]"
                      for s, m, a, b in zip(steps, mean, lo, hi, strict=True))


def goal(row: dict, arm: str, steps: list[int]) -> tuple[int, list[str]]:
    """The families at +0.10 or more over the untrained start after the budget with the
    interval above 0, and the points of the curve significantly below it."""
    j, met, negative = steps.index(BUDGET), 0, []
    for family in FAMILIES:
        mean, lo, hi = row[family, arm, "untrained"]
        met += bool(mean[j] >= GOAL and lo[j] > 0)
        negative += [f"{family} at {s}" for s, h in zip(steps, hi, strict=True) if h < 0]
    return met, negative


def markdown_row(name: str, row: dict, arm: str, steps: list[int]) -> str:
    j = steps.index(BUDGET)

    def gain(family: str) -> str:
        mean, lo, hi = row[family, arm, "untrained"]
        text = f"{mean[j]:+.3f} [{lo[j]:+.3f}, {hi[j]:+.3f}]"
        return f"**{text}**" if mean[j] >= GOAL and lo[j] > 0 else text

    met, negative = goal(row, arm, steps)
    both = "yes" if met >= 4 and not negative else "no"
    return (f"| {name}, {arm} | {' | '.join(gain(f) for f in FAMILIES)} | "
            f"{', '.join(negative) or 'none'} | {met} of 5; {both} |")


def main() -> None:
    table = ["| run, arm | motif | dilated motif | relation | co-occurrence | colour | "
             "significantly below the untrained start | families at +0.10; both parts |",
             "|---|---|---|---|---|---|---|---|"]
    pooled: dict[tuple[str, str, str], list[np.ndarray]] = {}
    steps: list[int] = []
    for path in sorted(HERE.glob("evaluation_seed*.json")):
        data = json.loads(path.read_text())
        steps = data["settings"]["steps"]
        tasks = {(t["family"], t["task_index"]): t for t in data["tasks"]}
        print(f"\n{path.name} (steps {steps}, {data['seconds']:.0f} s)")
        row = {}
        for family in FAMILIES:
            keys = sorted(q for q in tasks if q[0] == family)
            for a, b in PAIRS:
                diff = np.array([np.subtract(tasks[q]["accuracy"][a], tasks[q]["accuracy"][b])
                                 for q in keys])
                pooled.setdefault((family, a, b), []).append(diff)
                row[family, a, b] = bootstrap_interval(diff)
                print(f"  {family:14s} {a:8s} - {b:9s} | {cells(steps, *row[family, a, b])}")
        for family in FAMILIES:
            tops = {arm: [tasks[q]["top_op"][arm]["normal"] for q in sorted(tasks)
                          if q[0] == family] for arm in ("untrained", "select", "ensemble")}
            counts = {arm: {op: ops.count(op) for op in sorted(set(ops))}
                      for arm, ops in tops.items()}
            match = "" if PREFERRED[family] is None else " matches: " + ", ".join(
                f"{arm} {sum(op in PREFERRED[family] for op in ops)}/{len(ops)}"
                for arm, ops in tops.items())
            print(f"  {family:14s} normal-cell top op after {steps[-1]} steps: {counts}{match}")
        for arm in ("select", "ensemble"):
            table.append(markdown_row(path.stem.removeprefix("evaluation_"), row, arm, steps))
    print(f"\n{len(pooled['motif', 'select', 'untrained'])} runs pooled (two-level bootstrap)")
    row = {key: two_level_interval(diffs) for key, diffs in pooled.items()}
    for (family, a, b), stat in row.items():
        print(f"  {family:14s} {a:8s} - {b:9s} | {cells(steps, *stat)}")
    for arm in ("select", "ensemble"):
        table.append(markdown_row("pooled", row, arm, steps))
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
