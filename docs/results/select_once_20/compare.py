"""The evaluations of the seed-0 default run with the select arm choosing once, for the default
budget of 20 steps, checked against each other and against the per-step choice:

    python docs/results/select_once_20/compare.py

* ``evaluation.json``: ``--arms untrained select`` (the chosen start adapted by the select arm);
* ``evaluation_four_arms.json``: ``--arms meta untrained meta_arch_untrained_weights select``;
* ``../select_architecture_20/evaluation.json``: the same four arms with ``--select-at each``.
"""

import json
from pathlib import Path

import numpy as np

here = Path(__file__).parent
alone = json.loads((here / "evaluation.json").read_text())
four = json.loads((here / "evaluation_four_arms.json").read_text())
each = json.loads((here.parent / "select_architecture_20" / "evaluation.json").read_text())
steps = four["settings"]["steps"]
budget = steps.index(four["settings"]["select_at"])
for a, f, e in zip(alone["tasks"], four["tasks"], each["tasks"], strict=True):
    assert a["selection"] == f["selection"], a["task"]
    for key in ("accuracy", "top_op"):
        assert a[key]["select"] == f[key]["select"] and a[key]["untrained"] == f[key]["untrained"]
    for arm in ("meta", "untrained", "meta_arch_untrained_weights"):
        assert f["accuracy"][arm] == e["accuracy"][arm] and f["top_op"][arm] == e["top_op"][arm]
    assert f["selection"]["chosen"]["20"] == e["selection"]["chosen"]["20"]
    assert f["accuracy"]["select"][budget] == e["accuracy"]["select"][budget]
print("select and untrained: the two-arm evaluation equals the four-arm one, task for task")
print("the arms and the choice at 20 steps equal those of the per-step choice")
print(f"seconds: two arms {alone['seconds']:.0f}, four arms {four['seconds']:.0f}, "
      f"four arms choosing at each step count {each['seconds']:.0f}")
worst = (0.0, None, None)
for family, s in four["families"].items():
    once = np.array(s["gains"]["select-untrained"]["mean"])
    per_step = np.array(each["families"][family]["gains"]["select-untrained"]["mean"])
    j = int(np.abs(once - per_step).argmax())
    if abs(once[j] - per_step[j]) > worst[0]:
        worst = (abs(once[j] - per_step[j]), family, steps[j])
print(f"largest difference of a mean gain (select - untrained) between choosing once and at "
      f"each step count: {worst[0]:.3f} ({worst[1]}, {worst[2]} steps)")
