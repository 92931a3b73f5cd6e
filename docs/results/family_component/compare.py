"""The relation and co-occurrence components' architecture starts on the seed-4 run, against
that run's untrained start, its default (select) start and its own architecture start
(``global``: the 20-task refit of all families), paired by task (20 held-out tasks per family):

    python docs/results/family_component/compare.py

``<family>_seed4.json``: ``family_refit.py COPY <family>``, then ``python scripts/evaluate.py
COPY --arms meta_arch_untrained_weights --steps 0 20 40 80 --workers 2`` (541 s for relation);
``global_seed4.json``: the same evaluation of the run itself (``--out``); the other arms are
``../select_once_draws/evaluation_seed4.json`` (the same ``W_0``, tasks, splits and seeds).
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
STEPS = [20, 40, 80]


def arm(path: Path, name: str) -> dict[tuple[str, int], dict[int, float]]:
    data = json.loads(path.read_text())
    return {(t["family"], t["task_index"]): dict(zip(data["settings"]["steps"],
                                                     t["accuracy"][name], strict=True))
            for t in data["tasks"] if name in t["accuracy"]}


base = HERE.parent / "select_once_draws" / "evaluation_seed4.json"
others = {"untrained": arm(base, "untrained"), "select": arm(base, "select")}
if (HERE / "global_seed4.json").exists():  # the run's own architecture start (20-task refit)
    others["global"] = arm(HERE / "global_seed4.json", "meta_arch_untrained_weights")
for source in ("relation", "cooccurrence"):
    path = HERE / f"{source}_seed4.json"
    if not path.exists():
        continue
    component = arm(path, "meta_arch_untrained_weights")
    print(f"the {source} component's architecture start minus each arm, after "
          f"{' / '.join(map(str, STEPS))} steps, mean [95% interval over 20 tasks]")
    for family in FAMILIES:
        keys = sorted(k for k in component if k[0] == family)
        for name, other in others.items():
            d = np.array([[component[k][s] - other[k][s] for s in STEPS] for k in keys])
            mean, lo, hi = bootstrap_interval(d)
            cells = " / ".join(f"{m:+.3f} [{a:+.3f}, {b:+.3f}]"
                               for m, a, b in zip(mean, lo, hi, strict=True))
            print(f"  {family:14s} minus {name:9s}: {cells}")
