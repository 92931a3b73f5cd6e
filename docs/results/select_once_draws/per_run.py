"""The default pipeline one run at a time: each run's gain over the untrained start, and
whether it meets both parts of the goal.

    python docs/results/select_once_draws/per_run.py

Every run is ``python scripts/meta_svi.py --seed S`` (100 meta-steps, the 20-task architecture
refit) evaluated with ``python scripts/evaluate.py RUN --arms untrained select --workers 2``
(20 held-out tasks per family, paired; the select arm chooses once per task, for the budget of
20 steps). The goal's two parts, for one run: a gain of at least +0.10 with the 95% interval
above 0 after 20 steps on at least 4 of the 5 families (the gain part), and no family whose
gain is significantly negative (the interval's upper end below 0) after any step count (the
no-harm part). Intervals: percentile bootstrap over the run's 20 tasks of a family, with the
draws of the evaluation's own summary (``evaluation.json``'s ``families``; for the two new
draws, whose select and untrained arms were evaluated in two files, the same draws over the
tasks paired across the files). Then all runs pooled with the library's two-level bootstrap
(runs, then tasks; ``pooled.json`` is written here), as ``python scripts/evaluate.py RUN ...
--reuse --out OUT`` pools run directories.

The runs: the first seed-0, seed-1 and seed-2 runs (``../select_once_20/``,
``../select_once_seeds/``), a fresh seed-0 job (``../select_once_rerun/``), new draws of seeds 1
and 2 (``../arch_refit_40_vs_20/``, the ``refit20`` runs) and seeds 3 and 4 (here,
``evaluation_seed{3,4}.json``). Each has its own ``W`` (``start_digest``).
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import format_pooled, pool_evaluations
from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).parent
RESULTS = HERE.parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
BUDGET, GOAL = 20, 0.10

# run name -> (file with the select arm, file with the untrained arm)
RUNS = {
    "seed 0 (first)": ("select_once_20/evaluation.json",) * 2,
    "seed 1 (first)": ("select_once_seeds/evaluation_seed1.json",) * 2,
    "seed 2 (first)": ("select_once_seeds/evaluation_seed2.json",) * 2,
    "seed 0 (fresh)": ("select_once_rerun/evaluation.json",) * 2,
    "seed 1 (new draw)": ("arch_refit_40_vs_20/refit20_seed1.json",
                          "arch_refit_40_vs_20/refit40_seed1.json"),
    "seed 2 (new draw)": ("arch_refit_40_vs_20/refit20_seed2.json",
                          "arch_refit_40_vs_20/refit40_seed2.json"),
    "seed 3": ("select_once_draws/evaluation_seed3.json",) * 2,
    "seed 4": ("select_once_draws/evaluation_seed4.json",) * 2,
}


def arm(path: str, name: str) -> tuple[list[int], dict[tuple[str, int], np.ndarray]]:
    data = json.loads((RESULTS / path).read_text())
    return data["settings"]["steps"], {(t["family"], t["task_index"]): np.array(t["accuracy"][name])
                                       for t in data["tasks"] if name in t["accuracy"]}


def merged(name: str, select_file: str, untrained_file: str) -> dict:
    """One evaluation with both arms: the select file's, with the untrained arm of the other
    file where it lacks it (the same tasks, splits and seeds; the run's own ``W_0``)."""
    data = json.loads((RESULTS / select_file).read_text())
    if untrained_file != select_file:
        _, untrained = arm(untrained_file, "untrained")
        for t in data["tasks"]:
            t["accuracy"]["untrained"] = untrained[(t["family"], t["task_index"])].tolist()
        data["settings"] = {**data["settings"], "arms": ["untrained", "select"]}
    data["settings"] = {**data["settings"], "run_dir": name, "run_seed": int(name.split()[1])}
    return data


def relation_detail(select_file: str, untrained_file: str) -> str:
    """Relation after the budget: both arms' mean accuracy and the normal cell's most
    probable op after 80 steps from the chosen start, counted over the tasks."""
    steps, select = arm(select_file, "select")
    _, untrained = arm(untrained_file, "untrained")
    j = steps.index(BUDGET)
    keys = sorted(k for k in select if k[0] == "relation")
    data = json.loads((RESULTS / select_file).read_text())
    ops = Counter(t["top_op"]["select"]["normal"] for t in data["tasks"]
                  if t["family"] == "relation")
    chosen, initial = (np.mean([a[k][j] for k in keys]) for a in (select, untrained))
    return (f"relation after {BUDGET} steps: chosen start {chosen:.3f}, untrained "
            f"{initial:.3f}; normal cell's top op "
            f"after 80 steps: {dict(ops.most_common())}")


def run_summary(select_file: str, untrained_file: str) -> dict:
    steps, select = arm(select_file, "select")
    steps_u, untrained = arm(untrained_file, "untrained")
    assert steps == steps_u, (select_file, untrained_file)
    gains, negative = {}, []
    for fi, family in enumerate(FAMILIES):  # the draws of the evaluation's own summary
        keys = sorted(k for k in select if k[0] == family)
        mean, lo, hi = bootstrap_interval(np.array([select[k] - untrained[k] for k in keys]),
                                          seed=[0, fi])
        j = steps.index(BUDGET)
        gains[family] = (mean[j], lo[j], hi[j])
        negative += [f"{family} at {s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]"
                     for s, m, a, b in zip(steps, mean, lo, hi, strict=True) if b < 0]
    met = sum(m >= GOAL and lo > 0 for m, lo, _ in gains.values())
    return {"gains": gains, "families_met": met, "negative": negative,
            "meets": met >= 4 and not negative}


if __name__ == "__main__":
    print(f"gain over the untrained start after {BUDGET} steps, mean [95% interval], 20 tasks "
          "per family; then the families at +0.10 or more with the interval above 0, and the "
          "significantly negative points")
    meets, evaluated = 0, 0
    for name, files in RUNS.items():
        if not all((RESULTS / f).exists() for f in files):
            print(f"{name}: not evaluated")
            continue
        r = run_summary(*files)
        meets, evaluated = meets + r["meets"], evaluated + 1
        cells = "  ".join(f"{f} {m:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                          for f, (m, lo, hi) in r["gains"].items())
        print(f"{name}: {cells}\n    {r['families_met']} of 5 families; significantly "
              f"negative: {', '.join(r['negative']) or 'none'}; meets both parts: "
              f"{'yes' if r['meets'] else 'no'}\n    {relation_detail(*files)}")
    print(f"runs meeting both parts: {meets} of {evaluated}")
    evaluations = [merged(name, *files) for name, files in RUNS.items()
                   if all((RESULTS / f).exists() for f in files)]
    digests = [e["settings"]["start_digest"] for e in evaluations]
    assert len(set(digests)) == len(digests), "every run must have its own W"
    pooled = pool_evaluations(evaluations, n_boot=2000, seed=0)
    (HERE / "pooled.json").write_text(json.dumps(pooled, indent=1) + "\n")
    print(f"\n{len(evaluations)} runs pooled:\n")
    print(format_pooled(pooled))
