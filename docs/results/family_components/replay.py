"""Choice rules replayed on a screen (``screen.py``), paired with the run's evaluation.

    python docs/results/family_components/replay.py screen_seed4.json \\
        ../select_once_draws/evaluation_seed4.json

Per rule (a set of candidates, chosen by the held-out log-likelihood, a tie to the first), per
family: the gain over the untrained start after the budget (20 steps) and the difference from
the default rule (``all architecture``), mean [95% percentile bootstrap over tasks]; "own
component" takes the task's own family's component, which a new task cannot know. The
default's replay is checked against the evaluation's select arm, task by task.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.summary import bootstrap_interval

FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
BUDGET = 20


def pick(record: dict, names: list[str] | None) -> str:
    if names is None:
        return f"architecture:{record['family']}"
    return max(names, key=lambda n: (record["loglik"][n], -names.index(n)))


def cell(values: list[float]) -> str:
    mean, lo, hi = bootstrap_interval(np.array(values))
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def main(screen: Path, evaluation: Path) -> None:
    records = json.loads(screen.read_text())
    data = json.loads(evaluation.read_text())
    j = data["settings"]["steps"].index(BUDGET)
    arms = {(t["family"], t["task_index"]): t["accuracy"] for t in data["tasks"]}
    comps = [n for n in records[0]["query"] if n.startswith("architecture:")]
    default = ["all", "architecture"]
    rules = {"all architecture (the default)": default,
             "all architecture components": default + comps, "all components": ["all", *comps],
             "architecture components": ["architecture", *comps], "all alone": ["all"],
             "architecture alone": ["architecture"], "own component": None}
    off = sum(abs(r["query"][pick(r, default)] - arms[(r["family"], r["ti"])]["select"][j]) > 1e-6
              for r in records)
    print(f"{len(records)} tasks; the default's replay differs from the select arm on {off}")
    for title, against in (("gain over the untrained start", "untrained"),
                           ("difference from the default", None)):
        print(f"\n{title} after {BUDGET} steps\n| rule | " + " | ".join(FAMILIES) + " |")
        print("|---|" + "---|" * len(FAMILIES))
        for name, names in rules.items():
            if against is None and names == default:
                continue
            row = []
            for family in FAMILIES:
                rs = [r for r in records if r["family"] == family]
                base = [arms[(family, r["ti"])]["untrained"][j] if against else
                        r["query"][pick(r, default)] for r in rs]
                diffs = [r["query"][pick(r, names)] - b for r, b in zip(rs, base, strict=True)]
                row.append(cell(diffs))
            print(f"| {name} | " + " | ".join(row) + " |")
    print("\nchosen by 'all architecture components':")
    for family in FAMILIES:
        got = Counter(pick(r, default + comps) for r in records if r["family"] == family)
        print(f"  {family}: " + ", ".join(f"{n} {c}" for n, c in got.most_common()))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: replay.py SCREEN.json EVALUATION.json")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
