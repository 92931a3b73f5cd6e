"""Every candidate start's held-out score and query accuracy at the budget, for replaying
choice rules offline.

    python docs/results/family_components/screen.py RUN OUT.json [PART PARTS]

For the 20 test tasks per family of ``scripts/evaluate.py``, with its paired seeds: each
candidate (``all``, ``architecture`` and one ``architecture:<family>`` per component of the
run's refit) is scored as the select arm scores it (``select_start`` on the fit part, the
held-out log-likelihood and accuracy after ``adapt_steps``), and adapted on the whole
support set as its arm would be (query accuracy after ``adapt_steps``). ``PART PARTS`` splits
the tasks over processes (concatenate the outputs). ``screen_seed4.json`` is the seed-4 run
of ``../select_once_draws/`` (two processes, 25 min); ``replay.py`` replays rules on it.
"""

import json
import sys
from pathlib import Path

import torch

from pyro_base.inference.evaluate.paired import SELECT_SLOT, _adapt_arm, _setup, pair_seed
from pyro_base.inference.run.selection import checkpoint_components, select_start, selection_starts


def main(run: Path, out: Path, part: int, parts: int) -> None:
    torch.set_num_threads(1)
    s = _setup(run, device="cpu", arms=["meta"], tasks_per_family=20, elbo_impl=None)
    cfg, model, guide = s.cfg, s.model, s.guide
    starts = selection_starts(model, cfg, ("all", "architecture", "components"),
                              components=checkpoint_components(s.state))
    k = cfg.adapt_steps
    units = [(fi, ti) for fi in range(len(s.by_family)) for ti in range(20)][part::parts]
    records = []
    for fi, ti in units:
        task = list(s.by_family.values())[fi][ti]
        sel = select_start(model, guide, starts, *task.support, n_classes=task.n_classes,
                           steps=[k], temperature=cfg.adapt_temperature,
                           num_samples=cfg.num_samples, seed=pair_seed(0, fi, ti, SELECT_SLOT),
                           criterion="loglik")
        query = {n: _adapt_arm(model, guide, st, task, fi, ti, steps=[k], seed=0, cfg=cfg,
                               support_accuracy=False)["accuracy"][0]
                 for n, st in starts.items()}
        records.append({"family": task.family, "ti": ti,
                        "loglik": {n: v[0] for n, v in sel.heldout_loglik.items()},
                        "heldacc": {n: v[0] for n, v in sel.heldout_accuracy.items()},
                        "query": query})
    out.write_text(json.dumps(records))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5):
        sys.exit("usage: screen.py RUN OUT.json [PART PARTS]")
    part, parts = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) == 5 else (0, 1)
    main(Path(sys.argv[1]), Path(sys.argv[2]), part, parts)
