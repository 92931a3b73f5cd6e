"""Relation drawn more often in meta-training, against the default run of the same seed, paired.

    python docs/results/family_weights/compare.py

Each ``relationK_seedS.json`` here is

    python scripts/meta_svi.py --seed S --families motif dilated_motif relation [relation ...] \\
        cooccurrence colour     # relation listed K times
    python scripts/evaluate.py RUN --arms select --workers 2

The evaluation takes each family once, so its held-out tasks, splits and inner-loop seeds are
those of the default run's evaluation of the same seed (the later default draw of each seed
in the README's "One run at a time": seed 0, ``../select_once_rerun/evaluation.json``; seeds 1
and 2, ``../arch_refit_40_vs_20/``, ``refit20_seedS.json`` for the default choice and
``refit40_seedS.json`` for the untrained start; seeds 3 and 4,
``../select_once_draws/evaluation_seedS.json``; ``W_0`` depends on the seed alone). Listing
relation ``K`` times makes a meta-step draw it with probability ``K / (K + 4)`` instead of 1/5,
and gives it ``K`` of every ``K + 4`` of the refit's 20 tasks (K = 2: 6 instead of 4; K = 3:
9). The K = 2 runs of seeds 2-4 were evaluated with ``families: null`` written into their
``config.yaml``, before the evaluation took a repeated family once; the tasks are the same.
Per configuration, run, family and step count, mean [95% bootstrap interval over the 20
tasks]: the new default choice minus the default run's, and minus the untrained start; then
each pooled over the configuration's runs with the library's two-level bootstrap (runs, then
tasks).
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import two_level_interval
from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
BUDGET, GOAL = 20, 0.10
# seed -> (the default run's file with its select arm, the file with its untrained arm)
BASE = {"0": ("select_once_rerun/evaluation.json",) * 2,
        "1": ("arch_refit_40_vs_20/refit20_seed1.json", "arch_refit_40_vs_20/refit40_seed1.json"),
        "2": ("arch_refit_40_vs_20/refit20_seed2.json", "arch_refit_40_vs_20/refit40_seed2.json"),
        "3": ("select_once_draws/evaluation_seed3.json",) * 2,
        "4": ("select_once_draws/evaluation_seed4.json",) * 2}


def cells(steps: list[int], mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> str:
    return " | ".join(f"{s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]"
                      for s, m, a, b in zip(steps, mean, lo, hi, strict=True))


def load(path: Path) -> tuple[list[int], dict[tuple[str, int], dict]]:
    data = json.loads(path.read_text())
    return data["settings"]["steps"], {(t["family"], t["task_index"]): t for t in data["tasks"]}


def goal(row: dict, steps: list[int]) -> tuple[int, list[str]]:
    """The goal's two parts from the gains over the untrained start: the families at +0.10 or
    more after the budget with the interval above 0, and the points significantly below 0."""
    j, met, negative = steps.index(BUDGET), 0, []
    for family in FAMILIES:
        mean, lo, hi = row[family, "untrained"]
        met += bool(mean[j] >= GOAL and lo[j] > 0)
        negative += [f"{family} at {s}" for s, h in zip(steps, hi, strict=True) if h < 0]
    return met, negative


def markdown_row(name: str, row: dict, steps: list[int]) -> str:
    """One line of the summary table: the gains over the untrained start after the budget, in
    bold where they meet the goal, and relation against the default choice."""
    j, k = steps.index(BUDGET), steps.index(80)

    def gain(family: str) -> str:
        mean, lo, hi = row[family, "untrained"]
        text = f"{mean[j]:+.3f} [{lo[j]:+.3f}, {hi[j]:+.3f}]"
        return f"**{text}**" if mean[j] >= GOAL and lo[j] > 0 else text

    versus = "-"
    if ("relation", "default select") in row:
        mean, lo, hi = row["relation", "default select"]
        versus = " / ".join(f"{mean[i]:+.3f} [{lo[i]:+.3f}, {hi[i]:+.3f}]" for i in (j, k))
    met, negative = goal(row, steps)
    return (f"| {name} | {' | '.join(gain(f) for f in FAMILIES)} | {versus} | {met} of 5; "
            f"{', '.join(negative) or 'none'} |")


def main() -> None:
    table = ["| run | motif | dilated motif | relation | co-occurrence | colour | relation minus "
             "the default choice, 20 / 80 steps | goal: families, significantly below |",
             "|---|---|---|---|---|---|---|---|"]
    for k in (2, 3):
        pooled: dict[tuple[str, str], list[np.ndarray]] = {}
        for path in sorted(HERE.glob(f"relation{k}_seed*.json")):
            seed = path.stem.removeprefix(f"relation{k}_seed")
            steps, new = load(path)
            (base_steps, base), (_, initial) = (load(HERE.parent / f) for f in BASE[seed])
            assert steps == base_steps, (steps, base_steps)
            print(f"\nrelation x{k}, seed {seed} (steps {steps})")
            row = {}
            for family in FAMILIES:
                keys = sorted(q for q in new if q[0] == family)
                for ref, arm in (("default select", base), ("untrained", initial)):
                    name = ref.split()[-1]
                    diff = np.array([np.subtract(new[q]["accuracy"]["select"],
                                                 arm[q]["accuracy"][name]) for q in keys])
                    pooled.setdefault((family, ref), []).append(diff)
                    row[family, ref] = bootstrap_interval(diff)
                    print(f"  {family:14s} new select - {ref:14s} | "
                          f"{cells(steps, *row[family, ref])}")
                chosen = [new[q]["selection"]["chosen"]["20"] for q in keys]
                print(f"  {family:14s} starts chosen: "
                      f"{ {c: chosen.count(c) for c in sorted(set(chosen))} }")
            met, negative = goal(row, steps)
            print(f"  goal: {met} of 5 families at +{GOAL:.2f} or more after {BUDGET} steps with "
                  f"the interval above 0; significantly below the untrained start: "
                  f"{', '.join(negative) or 'none'}")
            table.append(markdown_row(f"x{k}, seed {seed}", row, steps))
        n = len(next(iter(pooled.values()), []))
        if n > 1:
            print(f"\nrelation x{k}: {n} runs pooled (two-level bootstrap)")
            row = {}
            for (family, ref), diffs in pooled.items():
                row[family, ref] = two_level_interval(diffs)
                print(f"  {family:14s} new select - {ref:14s} | {cells(steps, *row[family, ref])}")
            print(f"  goal, pooled: {goal(row, steps)[0]} of 5 families at +{GOAL:.2f} or more "
                  f"after {BUDGET} steps with the interval above 0")
            table.append(markdown_row(f"x{k}, {n} runs pooled", row, steps))
    table.append(default_row(sorted(p.stem.removeprefix("relation2_seed")
                                    for p in HERE.glob("relation2_seed*.json"))))
    print("\n" + "\n".join(table))


def default_row(seeds: list[str]) -> str:
    """The default runs of the same seeds pooled: their own gains over the untrained start."""
    row, steps = {}, []
    for family in FAMILIES:
        diffs = []
        for seed in seeds:
            (steps, base), (_, initial) = (load(HERE.parent / f) for f in BASE[seed])
            keys = sorted(q for q in base if q[0] == family)
            diffs.append(np.array([np.subtract(base[q]["accuracy"]["select"],
                                               initial[q]["accuracy"]["untrained"])
                                   for q in keys]))
        row[family, "untrained"] = two_level_interval(diffs)
    return markdown_row(f"default, the same {len(seeds)} seeds pooled", row, steps)


if __name__ == "__main__":
    main()
