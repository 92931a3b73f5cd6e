"""The architecture refit from 40 training tasks against the default 20, on three runs of the
default job: each run's own gain of the default start over the untrained one, and the paired
difference. Not kept: 40 minus 20 is +0.00 to +0.02 per family, every interval including 0.

    python docs/results/arch_refit_40_vs_20/compare.py

Runs: the seed-0 run of ``../select_once_rerun/`` and two new draws with seeds 1 and 2
(``python scripts/meta_svi.py --seed S``, the default 20-task refit), each copied and refit
again from 40 tasks (``python scripts/meta_svi.py --resume COPY --arch-refit-tasks 40``:
meta-training's ``W`` is kept, only the refit changes; ``config.yaml`` is seed 1's copy).
Evaluations (``python scripts/evaluate.py RUN --workers 2``):

* ``refit40_seed{1,2}.json``: ``--arms untrained select`` of the 40-task copies (1205 s, 1282 s);
* ``refit20_seed{1,2}.json``: ``--arms select`` of the 20-task runs (734 s, 768 s; the untrained
  arm is the same adaptation of the same ``W_0`` on both sides, so it is read from
  ``refit40_*``);
* ``refit40_seed0.json``: ``--steps 0 20 40 80 --arms meta_arch_untrained_weights select`` of
  the seed-0 copy (the architecture arm first, then ``--reuse`` for the select arm); its
  20-task side and the untrained arm are ``../select_once_rerun/`` and the architecture start
  of ``../select_each_none_rerun/``;
* ``arch_sharpness1_seed0.json``: ``--arms meta_arch_untrained_weights --adapt-sharpness 1
  --steps 0 20 40 80`` of the 20-task seed-0 run (428 s);
* ``arch_refit_initial_weights_seed0.json``: the same arm after ``refit_initial_weights.py``.

Every pair shares tasks, splits and inner-loop seeds; a run's interval is a bootstrap over its
20 tasks per family, the pooled one the library's two-level bootstrap (runs, then tasks).
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import two_level_interval

HERE = Path(__file__).parent
RESULTS = HERE.parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
ARCH = "meta_arch_untrained_weights"
STEPS = [20, 40, 80]
BUDGET = 20


def arm(path: Path, name: str) -> dict[tuple[str, int], dict[int, float]]:
    """Query accuracy of one arm per (family, task index) and step count."""
    data = json.loads(path.read_text())
    steps = data["settings"]["steps"]
    return {(t["family"], t["task_index"]): dict(zip(steps, t["accuracy"][name], strict=True))
            for t in data["tasks"] if name in t["accuracy"]}


def values(a: dict, b: dict, family: str) -> np.ndarray:
    """a minus b on the family's tasks, [tasks, len(STEPS)]."""
    keys = sorted(k for k in a if k[0] == family)
    assert keys and all(k in b for k in keys), family
    return np.array([[a[k][s] - b[k][s] for s in STEPS] for k in keys])


def fmt(mean: float, lo: float, hi: float) -> str:
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


runs = {
    0: {"untrained": arm(RESULTS / "select_once_rerun" / "evaluation.json", "untrained"),
        "refit20": arm(RESULTS / "select_once_rerun" / "evaluation.json", "select"),
        "refit40": arm(HERE / "refit40_seed0.json", "select"),
        "arch20": arm(RESULTS / "select_each_none_rerun" / "evaluation.json", ARCH),
        "arch40": arm(HERE / "refit40_seed0.json", ARCH)},
    **{s: {"untrained": arm(HERE / f"refit40_seed{s}.json", "untrained"),
           "refit20": arm(HERE / f"refit20_seed{s}.json", "select"),
           "refit40": arm(HERE / f"refit40_seed{s}.json", "select")} for s in (1, 2)}}

for side in ("refit20", "refit40"):
    print(f"\n{side}: the default start's gain over the untrained one, each run alone, after "
          f"{' / '.join(map(str, STEPS))} steps (mean [95% interval over 20 tasks])")
    for seed, r in runs.items():
        meets, negative = 0, []
        print(f"  seed {seed}:")
        for fi, family in enumerate(FAMILIES):
            v = values(r[side], r["untrained"], family)
            mean, lo, hi = two_level_interval([v], seed=fi)
            j = STEPS.index(BUDGET)
            meets += mean[j] >= 0.10 and lo[j] > 0
            negative += [f"{family} at {s}" for s, h in zip(STEPS, hi, strict=True) if h < 0]
            print(f"    {family:14s} " + " / ".join(fmt(*x) for x in zip(mean, lo, hi,
                                                                           strict=True)))
        print(f"    families at +0.10 with the interval above 0 after {BUDGET} steps: {meets}; "
              f"significantly negative: {negative or 'none'}")

print("\nrefit 40 minus refit 20, the default start's query accuracy, pooled over the 3 runs "
      f"(two-level interval), after {' / '.join(map(str, STEPS))} steps:")
for fi, family in enumerate(FAMILIES):
    v = [values(r["refit40"], r["refit20"], family) for r in runs.values()]
    print(f"  {family:14s} " + " / ".join(fmt(*x) for x in zip(*two_level_interval(v, seed=fi),
                                                               strict=True)))
for seed, r in runs.items():
    print(f"  seed {seed} alone:")
    for fi, family in enumerate(FAMILIES):
        v = values(r["refit40"], r["refit20"], family)
        print(f"    {family:14s} " + " / ".join(
            fmt(*x) for x in zip(*two_level_interval([v], seed=fi), strict=True)))

print("\nseed 0, the architecture start alone (refit logits, W_0's weights): 40 minus 20 tasks")
for fi, family in enumerate(FAMILIES):
    v = values(runs[0]["arch40"], runs[0]["arch20"], family)
    print(f"  {family:14s} " + " / ".join(fmt(*x) for x in zip(*two_level_interval([v], seed=fi),
                                                               strict=True)))

print("\nseed 0, two architecture starts not kept, minus the 20-task refit's architecture start "
      "and their gain over the untrained start:")
untrained0 = arm(RESULTS / "select_each_none_rerun" / "evaluation.json", "untrained")
for name, path in (("the 20-task refit's logits unsharpened (--adapt-sharpness 1)",
                    HERE / "arch_sharpness1_seed0.json"),
                   ("a 20-task refit from W_0's weights (refit_initial_weights.py)",
                    HERE / "arch_refit_initial_weights_seed0.json")):
    other = arm(path, ARCH)
    print(f"  {name}:")
    for fi, family in enumerate(FAMILIES):
        diff = two_level_interval([values(other, runs[0]["arch20"], family)], seed=fi)
        gain = two_level_interval([values(other, untrained0, family)], seed=fi)
        print(f"    {family:14s} minus: " + " / ".join(fmt(*x) for x in zip(*diff, strict=True))
              + "   over untrained: " + " / ".join(fmt(*x) for x in zip(*gain, strict=True)))
