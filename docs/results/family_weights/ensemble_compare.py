"""Relation drawn twice as often, adapted by the default ensemble, paired with the default runs.

    python docs/results/family_weights/ensemble_compare.py

Each ``relation2_ensemble_seedS.json`` here is

    python scripts/meta_svi.py --seed S --families motif dilated_motif relation relation \\
        cooccurrence colour
    python scripts/evaluate.py RUN --arms untrained ensemble --workers 2

(relation listed twice: a meta-step draws it with probability 2/6 instead of 1/5, and the
refit gives it 6 of its 20 tasks). The evaluation takes each family once, so its held-out
tasks, splits and inner-loop seeds are those of every evaluation of seed ``S``, and its
untrained arm (``W_0`` depends on the seed alone) is the default run's: this is
compared
(the same ``W_0``, tasks and seeds; where another machine's floating point made the default
run's file, the adaptations drift apart after a few steps, and the script prints by how much).
The default run of the same seed, adapted by the same ensemble, is
``../ensemble/evaluation_seedS.json``. Per run, family and step count, mean [95% bootstrap
interval over the 20 tasks] of the ensemble's gain over the untrained start, and of the
relation-twice ensemble minus the default run's ensemble; then each pooled over the runs with
the library's two-level bootstrap (runs, then tasks), and the goal's two parts (at least +0.10
after 20 steps with the interval above 0 on 4 of 5 families; no point of the curve significantly
below the untrained start) per run and pooled.
"""

from pathlib import Path

import numpy as np
from compare import BUDGET, FAMILIES, GOAL, cells, goal, load  # beside this file

from pyro_base.inference.evaluate.pooled import two_level_interval
from pyro_base.inference.evaluate.summary import PREFERRED, bootstrap_interval

HERE = Path(__file__).parent


def markdown_row(name: str, row: dict, steps: list[int]) -> str:
    j = steps.index(BUDGET)

    def text(family: str, ref: str) -> str:
        mean, lo, hi = row[family, ref]
        return f"{mean[j]:+.3f} [{lo[j]:+.3f}, {hi[j]:+.3f}]"

    def gain(family: str) -> str:
        mean, lo, _ = row[family, "untrained"]
        return (f"**{text(family, 'untrained')}**" if mean[j] >= GOAL and lo[j] > 0
                else text(family, "untrained"))

    met, negative = goal(row, steps)
    both = "yes" if met >= 4 and not negative else "no"
    return (f"| {name} | {' | '.join(gain(f) for f in FAMILIES)} | "
            f"{text('relation', 'default ensemble')} / {text('motif', 'default ensemble')} | "
            f"{', '.join(negative) or 'none'} | {met} of 5; {both} |")


def main() -> None:
    table = ["| run | motif | dilated motif | relation | co-occurrence | colour | minus the "
             "default run's ensemble: relation / motif | significantly below the untrained "
             "start | families at +0.10; both parts |", "|---|---|---|---|---|---|---|---|---|"]
    pooled: dict[tuple[str, str], list[np.ndarray]] = {}
    steps: list[int] = []
    for path in sorted(HERE.glob("relation2_ensemble_seed*.json")):
        seed = path.stem.removeprefix("relation2_ensemble_seed")
        steps, new = load(path)
        base_steps, base = load(HERE.parent / "ensemble" / f"evaluation_seed{seed}.json")
        assert steps == base_steps and new.keys() == base.keys(), path
        same = np.mean([new[q]["accuracy"]["untrained"] == base[q]["accuracy"]["untrained"]
                        for q in new])
        print(f"\n{path.name} (steps {steps}; untrained arm equal to the default run's file on "
              f"{same:.0%} of the tasks)")
        row = {}
        for family in FAMILIES:
            keys = sorted(q for q in new if q[0] == family)
            drift = np.array([np.subtract(new[q]["accuracy"]["untrained"],
                                          base[q]["accuracy"]["untrained"]) for q in keys])
            print(f"  {family:14s} untrained - its default-run file | "
                  f"{cells(steps, *bootstrap_interval(drift))}")
            for ref, other, arm in (("untrained", new, "untrained"),
                                    ("default ensemble", base, "ensemble")):
                diff = np.array([np.subtract(new[q]["accuracy"]["ensemble"],
                                             other[q]["accuracy"][arm]) for q in keys])
                pooled.setdefault((family, ref), []).append(diff)
                row[family, ref] = bootstrap_interval(diff)
                print(f"  {family:14s} ensemble - {ref:16s} | {cells(steps, *row[family, ref])}")
            if PREFERRED[family] is not None:
                tops = [new[q]["top_op"]["ensemble"]["normal"] for q in keys]
                print(f"  {family:14s} normal-cell top op after {steps[-1]} steps: "
                      f"{ {op: tops.count(op) for op in sorted(set(tops))} }, matches "
                      f"{sum(op in PREFERRED[family] for op in tops)}/{len(tops)}")
        table.append(markdown_row(f"seed {seed}", row, steps))
    n = len(pooled.get(("motif", "untrained"), []))
    if n > 1:
        print(f"\n{n} runs pooled (two-level bootstrap)")
        row = {}
        for (family, ref), diffs in pooled.items():
            row[family, ref] = two_level_interval(diffs)
            print(f"  {family:14s} ensemble - {ref:16s} | {cells(steps, *row[family, ref])}")
        table.append(markdown_row(f"{n} runs pooled", row, steps))
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
