"""Held-out scores of several starts on a run's test tasks, as the evaluation's select arm
reads them (the library's ``select_start`` with the evaluation's seeds), for comparing choice
rules offline with ``rules.py``.

    python docs/results/select_architecture_seeds/screen.py RUN_DIR OUT.json \\
        --arms meta untrained meta_arch_untrained_weights --tasks-per-family 8
"""

import argparse
import json
import time
from pathlib import Path

from pyro_base.inference.evaluate.paired import SELECT_SLOT, _setup, pair_seed
from pyro_base.inference.evaluate.workers import evaluate_parallel
from pyro_base.inference.run.selection import select_start

STEPS = [20, 40, 80]


def context(run: str, arms: list[str], tasks: int):
    return _setup(Path(run), device="cpu", arms=arms, tasks_per_family=tasks, elbo_impl=None)


def unit(s, fi: int, ti: int) -> dict:
    task = list(s.by_family.values())[fi][ti]
    start = time.perf_counter()
    sel = select_start(s.model, s.guide, s.states, *task.support, n_classes=task.n_classes,
                       steps=STEPS, temperature=s.cfg.adapt_temperature,
                       num_samples=s.cfg.num_samples, seed=pair_seed(0, fi, ti, SELECT_SLOT))
    return {**sel.to_dict(), "family": task.family, "task_index": ti,
            "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("out", type=Path)
    p.add_argument("--arms", nargs="+", required=True)
    p.add_argument("--tasks-per-family", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    s = context(a.run_dir, a.arms, a.tasks_per_family)
    units = [(fi, ti) for fi, ts in enumerate(s.by_family.values()) for ti in range(len(ts))]
    start = time.perf_counter()
    records = evaluate_parallel(units, a.workers, setup=context,
                                setup_args=(a.run_dir, a.arms, a.tasks_per_family), unit=unit)
    a.out.write_text(json.dumps({"arms": a.arms, "seconds": time.perf_counter() - start,
                                 "records": records}))
