"""A larger step size for adaptation, screened against the default pipeline, paired.

    python docs/results/adapt_lr/compare.py

Each ``evaluation_seedS_lrX.json`` here is

    python scripts/evaluate.py COPY --arms select --tasks-per-family 8 --steps 0 20 80 \\
        --workers 1

on a copy of the seed-S default run of ``../select_once_draws/`` (the same ``W``:
``start_digest``) whose ``config.yaml`` reads ``inner_lr: X`` instead of 0.03, so every
adaptation of the pipeline (the choice's two fits and the chosen start's) takes Adam steps of
``X`` on the weights; ``seed4_lr06`` adds the untrained start at that step size (``--arms
untrained select --workers 2``). Paired with the run's default evaluation (tasks 0-7 of each
family, the same tasks, splits and seeds), per family and step count, mean [95% bootstrap
interval over the 8 tasks]: the new select arm minus the default select arm, the new select
arm minus the untrained start (at 0.03), and where measured the untrained start at ``X``
minus at 0.03.
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
SCREENS = {"seed4_lr06": 4, "seed3_lr06": 3, "seed4_lr10": 4}


def load(path: Path) -> tuple[list[int], dict[tuple[str, int], dict[str, list[float]]]]:
    data = json.loads(path.read_text())
    return data["settings"]["steps"], {(t["family"], t["task_index"]): t["accuracy"]
                                       for t in data["tasks"]}


def main() -> None:
    for name, seed in SCREENS.items():
        steps, new = load(HERE / f"evaluation_{name}.json")
        base_steps, base = load(HERE.parent / "select_once_draws" / f"evaluation_seed{seed}.json")
        cols = [base_steps.index(s) for s in steps]
        print(f"\n{name} (steps {steps})")
        pairs = [("select", "select"), ("select", "untrained"), ("untrained", "untrained")]
        for family in FAMILIES:
            keys = sorted(k for k in new if k[0] == family)
            for arm, base_arm in pairs:
                if arm not in new[keys[0]]:
                    continue
                diff = np.array([[new[k][arm][i] - base[k][base_arm][c]
                                  for i, c in enumerate(cols)] for k in keys])
                mean, lo, hi = bootstrap_interval(diff)
                cells = " | ".join(f"{s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]"
                                   for s, m, a, b in zip(steps, mean, lo, hi, strict=True))
                print(f"  {family:14s} {arm} - default {base_arm:9s} | {cells}")


if __name__ == "__main__":
    main()
