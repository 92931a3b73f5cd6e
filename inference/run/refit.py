"""The architecture refit as the last phase of a meta-training run.

:func:`arch_refit_phase` refits the architecture prior of a meta-trained ``W``
(:mod:`~pyro_base.inference.vi.arch_refit`: the mean op probabilities of
``arch_refit_tasks`` training tasks, each adapted for ``arch_refit_steps`` inner steps at the
adaptation temperature), checkpoints it beside the meta-trained ``W`` and applies it to the
run's model. The tasks are independent, so on a CPU they are spread over
``arch_refit_workers`` processes (one torch thread each, "spawn" start); every task seeds its
own inner loop and the mean is taken in task order, so the logits equal one process's (with
one torch thread) float for float, whatever the number of workers.

Usage::

    refit = arch_refit_phase(cfg, svi, distribution, run, space)   # after svi.run(...)
    refit.logits["alpha_normal"].exp()      # the refit prior's op probabilities per edge
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from pyro_base.checkpoint import rng_state, save_checkpoint, set_rng_state
from pyro_base.inference.evaluate.workers import evaluate_parallel
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import build_guide, build_model, build_space
from pyro_base.inference.run.runlog import ARCH_REFIT, RunDir
from pyro_base.inference.vi.arch_refit import (
    ArchRefit,
    adapted_op_probs,
    check_refit,
    combine,
    refit_architecture,
    refit_tasks,
)
from pyro_base.inference.vi.diagnostics import arch_entropy_per_cell
from pyro_base.inference.vi.meta_svi import MetaSVI
from pyro_base.search_space import SearchSpace
from pyro_base.tasks.base import Task

log = logging.getLogger(__name__)


def _worker_context(cfg: dict[str, Any], W: dict[str, torch.Tensor]) -> tuple[Any, Any, Any]:
    """A refit worker's model (at ``W``, on the CPU), guide and config."""
    config = MetaConfig.from_dict(cfg)
    model = build_model(config, build_space(config))
    model.W.load_state_dict(W)
    return model, build_guide(config, model), config


def _worker_unit(context: tuple[Any, Any, Any], c: int, task: Task,
                 ) -> dict[str, torch.Tensor] | None:
    model, guide, cfg = context
    return adapted_op_probs(model, guide, task, c, steps=cfg.arch_refit_steps,
                            temperature=cfg.adapt_temperature, seed=cfg.seed)


def compute_refit(cfg: MetaConfig, svi: MetaSVI, distribution: Any, *,
                  progress: bool = False) -> ArchRefit:
    """The refit of ``svi.model.W`` that ``cfg`` asks for, in ``arch_refit_workers``
    processes on a CPU (in this one on a GPU or with one worker)."""
    tasks = refit_tasks(distribution, cfg.arch_refit_tasks, seed=cfg.seed)
    kw = dict(steps=cfg.arch_refit_steps, temperature=cfg.adapt_temperature, seed=cfg.seed)
    workers = min(cfg.arch_refit_workers, len(tasks))
    if workers <= 1 or svi.model.W.mu.device.type != "cpu":
        return refit_architecture(svi.model, svi.guide, tasks, meta_step=svi.step_count, **kw)
    check_refit(tasks, cfg.arch_refit_steps)
    W = {k: v.detach().cpu().clone() for k, v in svi.model.W.state_dict().items()}
    probs = evaluate_parallel([(c, t) for c, t in enumerate(tasks)], workers,
                              setup=_worker_context, setup_args=(cfg.to_dict(), W),
                              unit=_worker_unit, progress=progress, desc="arch refit")
    return combine(probs, meta_step=svi.step_count, families=[t.family for t in tasks], **kw)


def arch_refit_phase(cfg: MetaConfig, svi: MetaSVI, distribution: Any, run: RunDir | None,
                     space: SearchSpace, saved: dict[str, Any] | None = None, *,
                     progress: bool = False) -> ArchRefit:
    """Refit ``svi``'s architecture prior after meta-training and apply it to ``svi.model.W``:
    the ``saved`` refit when its settings match, else a new one, checkpointed (atomically,
    beside the meta-trained ``W``, with the RNG state meta-training left) before it is applied,
    and summarised in ``arch_refit.json``. The RNGs are restored afterwards, so what follows
    draws as it would without a refit."""
    want = {"tasks": cfg.arch_refit_tasks, "steps": cfg.arch_refit_steps,
            "temperature": cfg.adapt_temperature, "seed": cfg.seed, "meta_step": svi.step_count}
    refit = ArchRefit.from_state(saved) if saved is not None else None
    if refit is not None and refit.settings() == want:
        log.info("arch refit: reusing the checkpoint's (%s)", want)
        svi.model.W.load_state_dict(refit.apply(svi.model.W.state_dict()))
        return refit
    before = arch_entropy_per_cell(svi.model.W)
    start, rng = time.perf_counter(), rng_state()
    refit = compute_refit(cfg, svi, distribution, progress=progress)
    seconds = time.perf_counter() - start
    set_rng_state(rng)
    log.info("arch refit done in %.1f s", seconds)
    if run is not None and run.enabled:
        save_checkpoint(run.checkpoint, {"svi": svi.state_dict(), "rng": rng,
                                         "config": cfg.to_dict(),
                                         "arch_refit": refit.to_state()}, space=space)
    svi.model.W.load_state_dict(refit.apply(svi.model.W.state_dict()))
    if run is not None and run.enabled:
        run.write_json(ARCH_REFIT, {**refit.settings(), "n_good": refit.n_good,
                                    "workers": cfg.arch_refit_workers, "seconds": seconds,
                                    "arch_entropy_per_cell_before": before,
                                    "arch_entropy_per_cell_after":
                                        arch_entropy_per_cell(svi.model.W)})
    return refit
