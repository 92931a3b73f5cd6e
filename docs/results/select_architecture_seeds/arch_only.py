"""The architecture start (the meta-trained logits with W_0's weights) against the untrained
start, with and without the refit, pooled over the three seeds with the two-level interval.

    python docs/results/select_architecture_seeds/arch_only.py
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import two_level_interval

HERE = Path(__file__).parent
ARCH = "meta_arch_untrained_weights"


def records(path: Path) -> dict:
    return {(t["family"], t["task_index"]): t["accuracy"]
            for t in json.loads(path.read_text())["tasks"]}


sources = {  # (arch-only arm, untrained arm) per seed
    "no refit": [(HERE / f"arch_only_norefit_seed{s}.json",
                  HERE.parent / "sharpness" / f"evaluation_seed{s}.json") for s in range(3)],
    "refit": [(HERE.parent / "arch_refit_20" / f"evaluation_seed{s}.json",) * 2
              for s in range(3)],
}
for name, pairs in sources.items():
    runs = [(records(a), records(u)) for a, u in pairs]
    for family in ("motif", "dilated_motif", "relation", "cooccurrence", "colour"):
        gains = [np.array([np.subtract(arch[k][ARCH], untr[k]["untrained"])
                           for k in arch if k[0] == family]) for arch, untr in runs]
        mean, lo, hi = two_level_interval(gains)
        print(f"{name:9s} {family:14s} " + "  ".join(
            f"{m:+.3f} [{a:+.3f}, {b:+.3f}]" for m, a, b in zip(mean, lo, hi, strict=True)))
