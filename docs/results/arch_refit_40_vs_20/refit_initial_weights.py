"""A refit of the architecture prior from the run's initial weights ``W_0`` (with the
meta-trained logits) instead of from the meta-trained ``W``, written into a copy of a run:

    cp -r RUN COPY && python docs/results/arch_refit_40_vs_20/refit_initial_weights.py COPY 20
    python scripts/evaluate.py COPY --arms meta_arch_untrained_weights --steps 0 20 40 80 \\
        --workers 2

The architecture start adapts from the refit logits with ``W_0``'s weights, so this refit asks
which ops tasks prefer when their weights start from ``W_0``. It uses the library's refit
(the same tasks, seeds and worker processes as ``--arch-refit-tasks N``); only the ``W`` the
tasks adapt from differs. ``arch_refit_initial_weights_seed0.json`` is the evaluation above of
the seed-0 run of ``../select_once_rerun/``.
"""

import sys
from pathlib import Path

from pyro_base.checkpoint import load_checkpoint, save_checkpoint
from pyro_base.inference.evaluate.workers import evaluate_parallel
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import build_model, build_space, build_tasks, transfer_state
from pyro_base.inference.run.refit import _worker_context, _worker_unit
from pyro_base.inference.vi.arch_refit import combine, refit_tasks


def main(run: Path, n: int) -> None:
    cfg = MetaConfig.from_run_file(run / "config.yaml").replace(arch_refit_tasks=n)
    space = build_space(cfg)
    state = load_checkpoint(run / "checkpoint.pt", space=space)
    initial = build_model(cfg, space).W.state_dict()
    start = transfer_state(dict(state["svi"]["W"]), initial, transfer="architecture")
    start = {k: v.detach().cpu().clone() for k, v in start.items()}
    tasks = refit_tasks(build_tasks(cfg, space), n, seed=cfg.seed)
    probs = evaluate_parallel(list(enumerate(tasks)), 2, setup=_worker_context,
                              setup_args=(cfg.to_dict(), start), unit=_worker_unit,
                              desc="refit")
    refit = combine(probs, steps=cfg.arch_refit_steps, temperature=cfg.adapt_temperature,
                    seed=cfg.seed, meta_step=int(state["svi"]["step"]))
    state["arch_refit"] = refit.to_state()
    save_checkpoint(run / "checkpoint.pt", state, space=space)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: refit_initial_weights.py RUN_COPY N_TASKS")
    main(Path(sys.argv[1]), int(sys.argv[2]))
