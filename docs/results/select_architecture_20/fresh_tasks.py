"""The select arm's gain over the untrained start on test tasks 8-19 only (tasks 0-7 of the
three seeds chose the starts and the criterion), with a bootstrap over those tasks.

    python docs/results/select_architecture_20/fresh_tasks.py
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.summary import bootstrap_interval

data = json.loads((Path(__file__).parent / "evaluation.json").read_text())
steps = data["settings"]["steps"]
for fi, family in enumerate(data["settings"]["families"]):
    rows = [t for t in data["tasks"] if t["family"] == family and t["task_index"] >= 8]
    gain = np.array([np.subtract(t["accuracy"]["select"], t["accuracy"]["untrained"])
                     for t in rows])
    mean, lo, hi = bootstrap_interval(gain, seed=[0, fi])
    print(f"{family:14s} ({len(rows)} tasks) " + "  ".join(
        f"{k}: {m:+.3f} [{a:+.3f}, {b:+.3f}]" for k, m, a, b in zip(steps, mean, lo, hi,
                                                                     strict=True)))
