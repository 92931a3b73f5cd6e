"""The default pipeline's evaluation of a fourth meta-training run, alone and pooled with the
three of ``../select_once_seeds/``:

    python docs/results/select_once_rerun/pool.py

``evaluation.json`` is ``python scripts/evaluate.py RUN --arms untrained select --workers 2``
of a fresh ``python scripts/meta_svi.py`` (seed 0) on another machine of the same kind: its
``W`` (``start_digest``) is not the one of ``../select_once_20/``, the seed-0 run evaluated
there, so it is a fourth draw of the configuration. The four are pooled with the library's
two-level bootstrap (runs, then tasks), as ``scripts/evaluate.py RUN ... --reuse --out`` pools
run directories; ``pooled.json`` is written here.
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import format_pooled, pool_evaluations

here = Path(__file__).parent
files = {"seed 0 (select_once_20)": (0, here.parent / "select_once_20" / "evaluation.json"),
         "seed 1": (1, here.parent / "select_once_seeds" / "evaluation_seed1.json"),
         "seed 2": (2, here.parent / "select_once_seeds" / "evaluation_seed2.json"),
         "seed 0, rerun": (0, here / "evaluation.json")}
evaluations = []
for name, (seed, path) in files.items():
    data = json.loads(path.read_text())
    data["settings"] = {**data["settings"], "run_dir": name, "run_seed": seed}
    evaluations.append(data)
digests = [e["settings"]["start_digest"] for e in evaluations]
assert len(set(digests)) == len(digests), "the runs must be four different W"

rerun = evaluations[-1]
steps = rerun["settings"]["steps"]
budget = steps.index(20)
print("each run alone, select - untrained, mean [95% interval] after 20 steps; the step count "
      "with the lowest upper bound:")
for name, e in zip(files, evaluations, strict=True):
    meets = 0
    negative = []
    print(f"{name}:")
    for family, s in e["families"].items():
        g = s["gains"]["select-untrained"]
        worst = min(range(len(steps)), key=lambda j: g["hi"][j])
        meets += g["mean"][budget] >= 0.10 and g["lo"][budget] > 0
        negative += [f"{family} at {steps[j]}" for j in range(len(steps)) if g["hi"][j] < 0]
        print(f"  {family:14s} {g['mean'][budget]:+.3f} [{g['lo'][budget]:+.3f}, "
              f"{g['hi'][budget]:+.3f}]   {steps[worst]}: {g['mean'][worst]:+.3f} "
              f"[{g['lo'][worst]:+.3f}, {g['hi'][worst]:+.3f}]")
    print(f"  families at +0.10 with the interval above 0: {meets}; significantly negative: "
          f"{negative or 'none'}")

pooled = pool_evaluations(evaluations, n_boot=2000, seed=0)
(here / "pooled.json").write_text(json.dumps(pooled, indent=1) + "\n")
print("\nfour runs pooled:\n")
print(format_pooled(pooled))

print("\nco-occurrence after 80 steps: tasks whose untrained start ends with a pooling op as the "
      "normal cell's most probable op, and the chosen start's gain on them and on the others:")
for name, e in zip(files, evaluations, strict=True):
    j = e["settings"]["steps"].index(80)
    tasks = [t for t in e["tasks"] if t["family"] == "cooccurrence"]
    pooled_op = np.array(["pool" in t["top_op"]["untrained"]["normal"] for t in tasks])
    chosen_pool = sum("pool" in t["top_op"]["select"]["normal"] for t in tasks)
    gain = np.array([t["accuracy"]["select"][j] - t["accuracy"]["untrained"][j] for t in tasks])
    print(f"  {name}: untrained on a pooling op {pooled_op.sum()} of {len(tasks)} (the chosen "
          f"start: {chosen_pool}); gain there {gain[pooled_op].mean():+.3f}, elsewhere "
          f"{gain[~pooled_op].mean():+.3f}")
