"""The adaptation temperature: 0.3 and 1.0 against the default 0.5, paired.

    python docs/results/temperature/compare.py

Each ``evaluation_tauT.json`` here is one default run (``python scripts/meta_svi.py --seed 0``)
copied three times with ``adapt_temperature: T`` written into the copy's ``config.yaml``, then

    python scripts/evaluate.py RUN --arms meta untrained --tasks-per-family 8 \\
        --steps 0 5 10 20 40 --workers 1

The tasks, splits and inner-loop seeds are the same for every temperature (the evaluation's
seed and the run's ``W``: its ``start_digest``), so the three files are paired task by task.
Per arm and family, the mean query accuracy at each temperature after each step count, and
the mean [95% bootstrap interval over the 8 tasks] of 0.3 - 0.5 and 1.0 - 0.5; then the same
over all 40 tasks; last, the meta-prior's gain over the untrained start at each temperature.
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).parent
TAUS = ("0.3", "0.5", "1.0")
BASE = "0.5"


def main() -> None:
    runs = {t: json.loads((HERE / f"evaluation_tau{t}.json").read_text()) for t in TAUS}
    steps = runs[BASE]["settings"]["steps"]
    digests = {r["settings"]["start_digest"] for r in runs.values()}
    assert len(digests) == 1 and all(r["settings"]["steps"] == steps for r in runs.values())
    tasks = {t: {(q["family"], q["task_index"]): q for q in r["tasks"]} for t, r in runs.items()}
    families = list(runs[BASE]["families"])
    print(f"steps {steps}; one run, the same W (start_digest {digests.pop()[:8]})")
    for arm in runs[BASE]["settings"]["arms"]:
        for family in [*families, "all"]:
            keys = sorted(q for q in tasks[BASE] if family in ("all", q[0]))
            acc = {t: np.array([tasks[t][q]["accuracy"][arm] for q in keys]) for t in TAUS}
            means = "  ".join(f"tau {t}: " + " ".join(f"{m:.3f}" for m in acc[t].mean(0))
                              for t in TAUS)
            print(f"\n{arm:9s} {family:14s} ({len(keys)} tasks) {means}")
            for t in TAUS:
                if t == BASE:
                    continue
                mean, lo, hi = bootstrap_interval(acc[t] - acc[BASE])
                print(f"  {t} - {BASE}: " + " | ".join(
                    f"{s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]"
                    for s, m, a, b in zip(steps, mean, lo, hi, strict=True)))
    keys = sorted(tasks[BASE])
    print("\nmeta - untrained over all tasks, by temperature:")
    for t in TAUS:
        gain = np.array([np.subtract(tasks[t][q]["accuracy"]["meta"],
                                     tasks[t][q]["accuracy"]["untrained"]) for q in keys])
        mean, lo, hi = bootstrap_interval(gain)
        print(f"  tau {t}: " + " | ".join(f"{s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]"
                                          for s, m, a, b in zip(steps, mean, lo, hi, strict=True)))


if __name__ == "__main__":
    main()
