"""Full-batch inner steps (``--inner-batch 96 --steps 50``) against the default run, paired.

Reads ``evaluation.json`` here and the default run's ``../select_once_20/evaluation.json``
(the same 20 held-out tasks per family, the same seeds) and prints, per family and step
count, the mean of each arm's query accuracy and the paired difference, candidate minus
default, with a 95% bootstrap interval over tasks; for the select arm also the candidate's
own gain over its untrained start. Run from anywhere: ``python compare.py``.
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).resolve().parent


def main() -> None:
    cand = json.loads((HERE / "evaluation.json").read_text())
    base = json.loads((HERE.parent / "select_once_20" / "evaluation.json").read_text())
    steps, bsteps = cand["settings"]["steps"], base["settings"]["steps"]
    by_task = {(t["family"], t["task_index"]): t for t in base["tasks"]}
    for arm in ("select", "untrained"):
        print(f"\n{arm}: accuracy, candidate - default [95%]"
              + (", candidate's select - untrained [95%]" if arm == "select" else ""))
        for fi, fam in enumerate(cand["settings"]["families"]):
            rows = [t for t in cand["tasks"] if t["family"] == fam]
            other = [by_task[(t["family"], t["task_index"])] for t in rows]
            d = np.array([[t["accuracy"][arm][i] - b["accuracy"][arm][bsteps.index(s)]
                           for i, s in enumerate(steps)] for t, b in zip(rows, other, strict=True)])
            m, lo, hi = bootstrap_interval(d, seed=[0, fi])
            acc = np.array([t["accuracy"][arm] for t in rows]).mean(0)
            if arm == "select":
                g = np.array([np.subtract(t["accuracy"]["select"], t["accuracy"]["untrained"])
                              for t in rows])
                gm, glo, ghi = bootstrap_interval(g, seed=[0, fi])
            cells = []
            for i, s in enumerate(steps):
                if s == 0:
                    continue
                cell = f"{s}: {acc[i]:.3f} {m[i]:+.3f} [{lo[i]:+.3f}, {hi[i]:+.3f}]"
                if arm == "select":
                    cell += f" gain {gm[i]:+.3f} [{glo[i]:+.3f}, {ghi[i]:+.3f}]"
                cells.append(cell)
            print(f"{fam:14s} n={len(rows)}  " + " | ".join(cells))


if __name__ == "__main__":
    main()
