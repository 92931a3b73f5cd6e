"""Choice rules compared offline: per rule, the query accuracy of the start it picks (from the
runs' evaluations) minus the untrained start's, pooled over runs with the library's two-level
interval. The held-out scores come from ``screen.py``.

    python docs/results/select_architecture_seeds/rules.py   # this folder's files
    python docs/results/select_architecture_seeds/rules.py \\
        --evaluations EVAL_S0.json EVAL_S1.json EVAL_S2.json --screens S0.json S1.json S2.json
"""

import argparse
import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import two_level_interval

HERE = Path(__file__).parent

ARCH = "meta_arch_untrained_weights"
RULES = {  # name: (starts, score, tie order)
    "all none, accuracy": (["meta", "untrained"], "heldout_accuracy", 1),
    "all architecture, accuracy": (["meta", ARCH], "heldout_accuracy", 1),
    "all architecture none, accuracy": (["meta", ARCH, "untrained"], "heldout_accuracy", 1),
    "all architecture, loglik": (["meta", ARCH], "heldout_loglik", 1),
    "all architecture, accuracy, tie to architecture": (["meta", ARCH], "heldout_accuracy", -1),
}
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--evaluations", nargs="+", metavar="JSON",
                   default=[HERE / f"evaluation_seed{s}.json" for s in range(3)])
    p.add_argument("--screens", nargs="+", metavar="JSON",
                   default=[HERE / f"screen_seed{s}.json" for s in range(3)])
    a = p.parse_args()
    runs = []
    for run, screen in zip(a.evaluations, a.screens, strict=True):
        ev = json.loads(Path(run).read_text())
        steps = ev["settings"]["steps"]
        acc = {(t["family"], t["task_index"]): t["accuracy"] for t in ev["tasks"]}
        screened = json.loads(Path(screen).read_text())["records"]
        scores = {(r["family"], r["task_index"]): r for r in screened}
        runs.append((steps, acc, scores))
    out = {}
    for name, (starts, key, tie) in RULES.items():
        out[name] = {}
        for family in FAMILIES:
            per_run = []
            for steps, acc, scores in runs:
                rows = []
                for k, r in scores.items():
                    if k[0] != family:
                        continue
                    row = []
                    for j, step in enumerate(r["steps"]):
                        pick = max(starts, key=lambda n: (r[key][n][j], -tie * starts.index(n)))
                        i = steps.index(step)
                        row.append(acc[k][pick][i] - acc[k]["untrained"][i])
                    rows.append(row)
                per_run.append(np.array(rows))
            mean, lo, hi = two_level_interval(per_run)
            out[name][family] = {"steps": runs[0][2][next(iter(runs[0][2]))]["steps"],
                                 "mean": mean.round(3).tolist(), "lo": lo.round(3).tolist(),
                                 "hi": hi.round(3).tolist()}
            cells = zip(mean, lo, hi, strict=True)
            print(f"{name:48s} {family:14s} "
                  + "  ".join(f"{m:+.3f} [{lo_:+.3f}, {hi_:+.3f}]" for m, lo_, hi_ in cells))
    print(json.dumps(out))
