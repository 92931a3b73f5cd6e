"""The choice among the refit's family components against the default choice, paired.

    python docs/results/family_components/compare.py

For each run, ``evaluation_seedS.json`` here is

    python scripts/evaluate.py RUN --arms untrained select --select-from all components \\
        --reuse --workers 2

(its untrained arm reused from the run's default evaluation, ``../select_once_draws/``, the
same ``W``, tasks and seeds); for the seed-1 and seed-2 runs of ``../arch_refit_40_vs_20/``
(their 20-task refit, the default) it is ``--arms select`` alone, and the untrained arm is
read from that folder's evaluation of the same seed (``W_0`` depends on the seed alone).
Each new evaluation's ``start_digest`` equals its default evaluation's: the same run,
regenerated with ``python scripts/meta_svi.py --seed S``. The default evaluation's select arm
chose between ``all`` and ``architecture``. Printed per run and pooled over the runs
(two-level bootstrap, runs then tasks,
``pyro_base.inference.evaluate.pooled.two_level_interval``): the new select arm's gain over
the untrained start, and its difference from the default select arm, per family and step
count, as mean [95% interval]; and which starts the tasks chose.
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import two_level_interval

HERE = Path(__file__).parent
RESULTS = HERE.parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
# run -> (default evaluation, the new select arm's, the untrained arm's)
RUNS = {f"seed {s}": (f"select_once_draws/evaluation_seed{s}.json",
                      f"family_components/evaluation_seed{s}.json",
                      f"family_components/evaluation_seed{s}.json") for s in (3, 4)
        if (HERE / f"evaluation_seed{s}.json").exists()}
RUNS |= {f"seed {s}": (f"arch_refit_40_vs_20/refit20_seed{s}.json",
                       f"family_components/evaluation_seed{s}.json",
                       f"arch_refit_40_vs_20/refit40_seed{s}.json") for s in (1, 2)
         if (HERE / f"evaluation_seed{s}.json").exists()}


def accuracies(path: str, arm: str) -> tuple[list[int], dict[tuple[str, int], np.ndarray]]:
    data = json.loads((RESULTS / path).read_text())
    return data["settings"]["steps"], {(t["family"], t["task_index"]): np.array(t["accuracy"][arm])
                                       for t in data["tasks"] if arm in t["accuracy"]}


def family_arrays(default: str, new: str, base: str, family: str,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per task of ``family`` (rows) and step count: the new select arm minus the untrained
    start, and minus the default select arm."""
    steps, old = accuracies(default, "select")
    steps_new, cand = accuracies(new, "select")
    _, untrained = accuracies(base, "untrained")
    if steps != steps_new:
        raise ValueError(f"{default} and {new} read other step counts")
    keys = sorted(k for k in cand if k[0] == family)
    return (np.stack([cand[k] - untrained[k] for k in keys]),
            np.stack([cand[k] - old[k] for k in keys]))


def cell(values: list[np.ndarray], j: int) -> str:
    mean, lo, hi = two_level_interval(values)
    return f"{mean[j]:+.3f} [{lo[j]:+.3f}, {hi[j]:+.3f}]"


def table(title: str, runs: dict[str, tuple[str, str, str]], which: int) -> None:
    steps, _ = accuracies(next(iter(runs.values()))[1], "select")
    print(f"\n{title}\n| family | " + " | ".join(f"{k} steps" for k in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for family in FAMILIES:
        values = [family_arrays(*files, family)[which] for files in runs.values()]
        print(f"| {family} | " + " | ".join(cell(values, j) for j in range(len(steps))) + " |")


def main() -> None:
    for name, files in RUNS.items():
        table(f"{name}: new select - untrained", {name: files}, 0)
        table(f"{name}: new select - default select", {name: files}, 1)
        data = json.loads((RESULTS / files[1]).read_text())
        print(f"({data['seconds'] / 60:.1f} min)")
        for family in FAMILIES:
            chosen = Counter(t["selection"]["chosen"][str(t["selection"]["select_at"])]
                             for t in data["tasks"] if t["family"] == family)
            print(f"  {family}: " + ", ".join(f"{n} {c}" for n, c in chosen.most_common()))
    table(f"pooled over {len(RUNS)} runs: new select - untrained", RUNS, 0)
    table(f"pooled over {len(RUNS)} runs: new select - default select", RUNS, 1)


if __name__ == "__main__":
    main()
