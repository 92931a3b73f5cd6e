"""A refit of the architecture prior from the run's initial weights ``W_0`` (with the
meta-trained logits) instead of from the meta-trained ``W``, written into a copy of a run:

    cp -r RUN COPY && python docs/results/arch_refit_40_vs_20/refit_initial_weights.py COPY 20
    python scripts/evaluate.py COPY --arms meta_arch_untrained_weights --steps 0 20 40 80 \\
        --workers 2

The architecture start adapts from the refit logits with ``W_0``'s weights, so this refit asks
which ops tasks prefer when their weights start from ``W_0``. It uses the library's refit
(the same tasks and seeds as ``--arch-refit-tasks N``, in one process); only the ``W`` the
tasks adapt from differs. ``arch_refit_initial_weights_seed0.json`` is the evaluation above of
the seed-0 run of ``../select_once_rerun/``.
"""

import sys
from pathlib import Path

import torch

from pyro_base.checkpoint import load_checkpoint, save_checkpoint
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import (
    build_guide,
    build_model,
    build_space,
    build_tasks,
    transfer_state,
)
from pyro_base.inference.vi.arch_refit import refit_architecture, refit_tasks


def main(run: Path, n: int) -> None:
    torch.set_num_threads(1)  # the worker processes' setting: the same logits float for float
    cfg = MetaConfig.from_run_file(run / "config.yaml").replace(arch_refit_tasks=n)
    space = build_space(cfg)
    state = load_checkpoint(run / "checkpoint.pt", space=space)
    model = build_model(cfg, space)
    model.W.load_state_dict(transfer_state(dict(state["svi"]["W"]), model.W.state_dict(),
                                           transfer="architecture"))
    tasks = refit_tasks(build_tasks(cfg, space), n, seed=cfg.seed)
    refit = refit_architecture(model, build_guide(cfg, model), tasks,
                               steps=cfg.arch_refit_steps, temperature=cfg.adapt_temperature,
                               seed=cfg.seed, meta_step=int(state["svi"]["step"]))
    state["arch_refit"] = refit.to_state()
    save_checkpoint(run / "checkpoint.pt", state, space=space)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: refit_initial_weights.py RUN_COPY N_TASKS")
    main(Path(sys.argv[1]), int(sys.argv[2]))
