"""Can a task's own adaptation name its family's component? The variational E-step's answer.

    python docs/results/family_components/assign.py RUN OUT.json

With the posterior ``q(z)`` of a task fixed, the ELBO under component ``k`` differs between
components only by ``E_q[log p_k(z)]`` (the architecture KL's cross-entropy term), so the
component that explains the task best is ``argmax_k sum_e sum_o q_e(o) log p_k,e(o)``
(``p_k`` the component's sharpened prior). For the 20 test tasks per family of
``scripts/evaluate.py`` this adapts the ``all`` and ``architecture`` starts on the fit part of
the support set for ``adapt_steps`` steps (the select arm's split and seed) and records every
component's score; it prints, per start, how often each family's tasks pick each family's
component. ``assign_seed4.json`` is the seed-4 run of ``../select_once_draws/`` (one process,
about 5 min). A choice this cheap would cost no adaptation beyond the default's.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import torch

from pyro_base.inference.evaluate.paired import SELECT_SLOT, family_tasks, pair_seed
from pyro_base.inference.run.factory import build_space, build_tasks, load_trained
from pyro_base.inference.run.selection import (
    checkpoint_components,
    holdout_mask,
    selection_starts,
)


def main(run: Path, out: Path) -> None:
    torch.set_num_threads(1)
    model, guide, cfg, state = load_trained(run)
    comps = checkpoint_components(state)
    g = cfg.adapt_sharpness
    starts = selection_starts(model, cfg, ("all", "architecture"))
    by_family = family_tasks(build_tasks(cfg, build_space(cfg)), 20)
    k = cfg.adapt_steps
    records = []
    for fi, (family, tasks) in enumerate(by_family.items()):
        for ti, task in enumerate(tasks):
            xs, ys = task.support
            seed = pair_seed(0, fi, ti, SELECT_SLOT)
            held = holdout_mask(ys, n_classes=task.n_classes, seed=seed)
            rec = {"family": family, "ti": ti}
            for name, start in starts.items():
                model.W.load_state_dict(start)
                torch.manual_seed(seed)
                path, _ = guide.adapt_path(xs[~held], ys[~held], n_classes=task.n_classes,
                                           temperature=cfg.adapt_temperature, steps=[0, k])
                q = {n: v.detach().softmax(-1) for n, v in path[k].params.items()
                     if n.startswith("alpha_")}
                rec[name] = {f: float(sum((q[n] * (g * c[n]).log_softmax(-1)).sum() for n in q))
                             for f, c in comps.items()}
            records.append(rec)
    out.write_text(json.dumps(records))
    for name in starts:
        print(f"from {name}: rows the tasks' family, columns the component picked")
        for family in by_family:
            got = Counter(max(r[name], key=r[name].get) for r in records
                          if r["family"] == family)
            print(f"  {family:14s}" + "".join(f"{got[f]:4d}" for f in comps))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: assign.py RUN OUT.json")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
