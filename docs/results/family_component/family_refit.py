"""An oracle probe of a per-family architecture prior: the architecture refit from one family's
training tasks only, written into a copy of a run:

    cp -r RUN COPY && python docs/results/family_component/family_refit.py COPY relation
    python scripts/evaluate.py COPY --arms meta_arch_untrained_weights --steps 0 20 40 80 \\
        --workers 2

The run's refit draws ``arch_refit_tasks`` training tasks stratified by family and sets the
prior's logits to the log of their mean adapted op probabilities. Here only the draws of one
family are kept (4 of the default 20), each adapted for ``arch_refit_steps`` steps from
meta-training's ``W`` as the refit does (their inner-loop seeds are their positions in the
shorter list), so the copy's architecture start is that family's component. Evaluated on the
family's own held-out tasks it says what a per-family prior could give if the family were
known. ``relation_seed4.json`` and ``cooccurrence_seed4.json`` are the evaluations of the
seed-4 run of ``../select_once_draws/`` with the relation and the co-occurrence component, and
``global_seed4.json`` that run's own architecture start (its 20-task refit; ``--out``), all
paired with the run's untrained and select arms by ``compare.py`` here.
"""

import sys
from pathlib import Path

import torch

from pyro_base.checkpoint import load_checkpoint, save_checkpoint
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import build_guide, build_model, build_space, build_tasks
from pyro_base.inference.vi.arch_refit import refit_architecture, refit_tasks


def main(run: Path, family: str) -> None:
    torch.set_num_threads(1)
    cfg = MetaConfig.from_run_file(run / "config.yaml")
    space = build_space(cfg)
    state = load_checkpoint(run / "checkpoint.pt", space=space)
    model = build_model(cfg, space)
    model.W.load_state_dict(dict(state["svi"]["W"]))  # meta-training's W, as the refit starts
    tasks = [t for t in refit_tasks(build_tasks(cfg, space), cfg.arch_refit_tasks, seed=cfg.seed)
             if t.family == family]
    if not tasks:
        sys.exit(f"no refit task of family {family!r}")
    refit = refit_architecture(model, build_guide(cfg, model), tasks,
                               steps=cfg.arch_refit_steps, temperature=cfg.adapt_temperature,
                               seed=cfg.seed, meta_step=int(state["svi"]["step"]))
    state["arch_refit"] = refit.to_state()
    save_checkpoint(run / "checkpoint.pt", state, space=space)
    print(f"{len(tasks)} {family} tasks; refit written to {run / 'checkpoint.pt'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: family_refit.py RUN_COPY FAMILY")
    main(Path(sys.argv[1]), sys.argv[2])
