"""A meta-training run from a :class:`~pyro_base.inference.run.config.MetaConfig`: the one
orchestration the main job and the experiment share.

:func:`meta_train_run` builds the search space, tasks, model, guide and
:class:`~pyro_base.inference.vi.meta_svi.MetaSVI` from the config, then:

* refuses up front what cannot work: tasks with more classes than the supernet's outputs, a
  supernet whose estimated memory does not fit the device (:mod:`pyro_base.memory`);
* under ``torchrun`` (``WORLD_SIZE > 1``) joins the process group and checks after every
  meta-step that all ranks hold the same ``W``;
* writes the run directory (:class:`~pyro_base.inference.run.runlog.RunDir`): ``config.yaml``,
  ``metrics.jsonl`` and an atomic ``checkpoint.pt`` every ``checkpoint_every`` steps, only of
  steps with a finite ``W`` and at least one finite task loss;
* with the ``tensorboard`` extra installed, writes every per-step scalar to
  ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs``);
* resumes from that checkpoint bit-identically, refusing settings that would change what the
  saved steps computed (:data:`RESUME_MAY_CHANGE` may change);
* with ``arch_refit_tasks > 0``, refits the architecture prior after the last meta-step
  (:func:`~pyro_base.inference.run.refit.arch_refit_phase`; rank 0): the checkpoint keeps
  the meta-trained ``W`` under ``svi`` and the refit logits under ``arch_refit`` (what
  :func:`~pyro_base.inference.run.factory.load_trained` adapts from), ``arch_refit.json``
  summarises it, and a finished run resumed with the same settings reuses it.

Usage::

    cfg = MetaConfig(steps=100)
    result = meta_train_run(cfg, run_dir="runs/mine")
    result.svi.guide.prior_posterior().genotype(result.space)
    meta_train_run(cfg.replace(steps=120), run_dir="runs/mine", resume=True)  # 20 more steps
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from pyro_base.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from pyro_base.inference.run.config import RUN_FILE_DEFAULTS, ConfigError, MetaConfig
from pyro_base.inference.run.factory import (
    build_guide,
    build_meta_svi,
    build_model,
    build_space,
    build_tasks,
    resolve_device,
)
from pyro_base.inference.run.refit import arch_refit_phase
from pyro_base.inference.run.runlog import CONFIG, TASK_SPLITS, RunDir
from pyro_base.inference.vi.arch_refit import ArchRefit
from pyro_base.inference.vi.meta_svi import MetaSVI, NonFiniteLossError
from pyro_base.memory import check_fits, estimate_memory
from pyro_base.search_space import SearchSpace

log = logging.getLogger(__name__)

RESUME_MAY_CHANGE = frozenset({
    "steps", "n_heldout", "adapt_steps", "adapt_temperature", "adapt_sharpness", "num_samples",
    "posterior_draws",
    "device", "threads", "checkpoint_every", "collective_timeout", "nan_policy", "max_bad_steps",
    # the refit follows the meta-steps and is redone when these change
    "arch_refit_tasks", "arch_refit_steps", "arch_refit_workers", "meta_workers"})


@dataclass
class MetaRun:
    """What :func:`meta_train_run` leaves: the trained pieces and where they were written."""

    cfg: MetaConfig
    space: SearchSpace
    svi: MetaSVI
    run: RunDir | None
    device: torch.device
    rank: int
    world: int
    seconds: float
    distribution: Any = None  # the task distribution it trained on (data decoded once)
    arch_refit: ArchRefit | None = None  # applied to svi.model.W (rank 0)


def init_distributed(cfg: MetaConfig, device: torch.device) -> tuple[int, int, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``: (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    tdist.init_process_group(backend, timeout=timedelta(seconds=cfg.collective_timeout))
    return tdist.get_rank(), tdist.get_world_size(), device


def check_memory(cfg: MetaConfig, space: Any, device: torch.device) -> None:
    """Estimate one inner step's memory and raise InsufficientMemoryError if it cannot fit."""
    unrolled = cfg.inner_steps if cfg.mode == "maml" and cfg.inner_grad == "second" else 1
    batch = min(cfg.inner_batch, cfg.n_support)
    if cfg.mode == "maml":  # the meta-loss is a forward-backward pass on the whole query set
        batch = max(batch, cfg.n_query)
    if cfg.batch_tasks:  # a rank adapts its share of the step's tasks at once
        world = tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1
        batch *= math.ceil(cfg.tasks_per_step / world)
    est = estimate_memory(space, batch, unrolled_steps=max(unrolled, 1),
                          straight_through=cfg.relaxation == "straight_through")
    check_fits(est, device)


def check_resumable(cfg: MetaConfig, saved: dict[str, Any], path: Path) -> None:
    """Refuse a resume whose settings change what the saved meta-steps computed."""
    current = cfg.to_dict()
    saved = {**RUN_FILE_DEFAULTS, **saved}  # a checkpoint from before a setting ran its old value
    changed = sorted(k for k, v in saved.items()
                     if k not in RESUME_MAY_CHANGE and k in current and current[k] != v)
    if changed:
        diff = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed)
        raise ConfigError(f"--resume: {path} was trained with other settings ({diff}); only "
                          f"{sorted(RESUME_MAY_CHANGE)} may change on resume")


def check_tasks_fit(cfg: MetaConfig, distribution: Any, space: Any) -> None:
    """Tasks with more classes than the supernet has outputs: a config error, up front."""
    n = getattr(distribution, "n_classes", None)
    hi = max(n) if isinstance(n, tuple | list) else n
    if isinstance(hi, int) and hi > space.n_classes:
        raise ConfigError(f"--task-source {cfg.task_source} yields tasks with up to {hi} "
                          f"classes but --preset {cfg.preset} has {space.n_classes} outputs; "
                          "choose a larger preset")


def replica_spread(svi: MetaSVI) -> float:
    """Largest difference of any weight of W across ranks (one MAX and one MIN all-reduce)."""
    flat = torch.cat([p.detach().reshape(-1).double()
                      for p in svi.model.W.named_tensors().values()])
    hi, lo = flat.clone(), flat.clone()
    tdist.all_reduce(hi, op=tdist.ReduceOp.MAX)
    tdist.all_reduce(lo, op=tdist.ReduceOp.MIN)
    return float((hi - lo).max())


def checkpoint_callback(run: RunDir, cfg: MetaConfig, space: Any, rank: int, world: int,
                        ) -> Callable[[MetaSVI, dict[str, Any]], None]:
    """The per-step callback: replica check, metrics, atomic checkpoint of good steps only."""

    def on_step(svi: MetaSVI, metrics: dict[str, Any]) -> None:
        if world > 1:
            spread = replica_spread(svi)
            metrics["replica_spread"] = spread
            if not spread <= 1e-6:
                raise RuntimeError(f"ranks disagree on W after meta-step {metrics['step']} "
                                   f"(largest difference {spread:.3g})")
        run.append_metrics(metrics)
        if rank != 0 or not (svi.step_count % cfg.checkpoint_every == 0
                             or svi.step_count == cfg.steps):
            return
        if metrics.get("n_good", 1) == 0:
            log.warning("meta-step %d had no finite task loss; keeping the previous checkpoint",
                        metrics["step"])
            return
        if not all(bool(torch.isfinite(p).all()) for p in svi.model.W.named_tensors().values()):
            raise NonFiniteLossError(f"W is non-finite after meta-step {metrics['step']}; "
                                     f"not overwriting {run.checkpoint}")
        save_checkpoint(run.checkpoint, {"svi": svi.state_dict(), "rng": rng_state(),
                                         "config": cfg.to_dict()}, space=space)

    return on_step


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics record, nested keys joined by ``/`` (``agreement/mu/cos``)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, int | float) and not isinstance(v, bool) and k != "step":
            out[prefix + k] = float(v)
    return out


def tensorboard_callback(run: RunDir, *, start_step: int = 0,
                         ) -> Callable[[MetaSVI, dict[str, Any]], None] | None:
    """Every scalar of a meta-step's metrics (loss, temperature, step size, op entropy per
    cell, delta agreement, sigma) to ``RUN_DIR/tensorboard`` with TensorBoard's
    ``SummaryWriter``; ``None`` when TensorBoard is not installed or the run writes nothing.
    A resumed run (``start_step > 0``) first purges the events of steps it will redo."""
    if not run.enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional ``tensorboard`` extra is not installed
        return None
    writer = SummaryWriter(log_dir=str(run / "tensorboard"), purge_step=start_step or None)

    def on_step(svi: MetaSVI, metrics: dict[str, Any]) -> None:
        for tag, value in scalars(metrics).items():
            writer.add_scalar(tag, value, global_step=int(metrics["step"]))
        writer.flush()

    return on_step


def _chain(*callbacks: Callable[[MetaSVI, dict[str, Any]], None] | None,
           ) -> Callable[[MetaSVI, dict[str, Any]], None]:
    live = [c for c in callbacks if c is not None]

    def on_step(svi: MetaSVI, metrics: dict[str, Any]) -> None:
        for c in live:
            c(svi, metrics)

    return on_step


def _resume(run: RunDir, cfg: MetaConfig, svi: MetaSVI, space: SearchSpace,
            ) -> dict[str, Any] | None:
    """Load the checkpoint into ``svi`` and the RNGs; returns its ``arch_refit`` entry."""
    # RNG states must stay on the CPU; load_state_dict copies W onto the device
    state = load_checkpoint(run.checkpoint, space=space, map_location="cpu")
    check_resumable(cfg, state.get("config", {}), run.checkpoint)
    svi.load_state_dict(state["svi"])
    set_rng_state(state["rng"])
    run.truncate_metrics(svi.step_count)
    for stale in run.remove_stale_temps():
        log.warning("removed %s, left by a run killed while saving", stale)
    log.info("resumed %s at meta-step %d", run.path, svi.step_count)
    return state.get("arch_refit")


def meta_train_run(cfg: MetaConfig, distribution: Any = None, *,
                   run_dir: str | Path | None = None, resume: bool = False,
                   memory_check: bool = True, progress: bool = True,
                   log_level: int | str = logging.INFO,
                   wrap_tasks: Callable[[Any, MetaSVI, int], Any] | None = None) -> MetaRun:
    """Meta-train ``W`` for ``cfg.steps`` meta-steps in total (a resumed run does the rest).

    :param distribution: the task distribution; default: the one ``cfg`` names.
    :param run_dir: where ``config.yaml``, ``metrics.jsonl``, ``log.txt`` and ``checkpoint.pt``
        go (only rank 0 writes); ``None`` writes nothing and checkpoints nothing.
    :param resume: continue from ``run_dir``'s checkpoint when it has one.
    :param log_level: of the run's ``log.txt`` (and the root logger).
    :param wrap_tasks: ``(distribution, svi, rank) -> distribution``, e.g. to inject faults.
    :raises ConfigError: settings the device, search space or task source refuse, or a resume
        with changed settings; :class:`~pyro_base.memory.InsufficientMemoryError`.
    """
    try:  # values MetaConfig accepts but the device, search space or task source refuse
        device = resolve_device(cfg.device)
        space = build_space(cfg)
        if distribution is None:
            distribution = build_tasks(cfg, space)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, device = init_distributed(cfg, device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    check_tasks_fit(cfg, distribution, space)
    if memory_check:
        check_memory(cfg, space, device)
    run = RunDir(run_dir, enabled=rank == 0) if run_dir is not None else None
    if run is not None:
        run.setup_logging(logging.getLevelName(log_level) if isinstance(log_level, str)
                          else log_level)
    model = build_model(cfg, space, device=device)
    svi = build_meta_svi(cfg, model, build_guide(cfg, model))
    if wrap_tasks is not None:
        distribution = wrap_tasks(distribution, svi, rank)
    saved_refit = None
    if run is not None and resume and run.checkpoint.exists():
        saved_refit = _resume(run, cfg, svi, space)
    elif run is not None:
        run.truncate_metrics(0)  # a fresh start in a used directory keeps no old step lines
    if run is not None and rank == 0:
        cfg.to_yaml(run / CONFIG)
        if hasattr(distribution, "split_classes"):  # on-disk sources: which classes are where
            run.write_json(TASK_SPLITS, distribution.split_classes())
    log.info("run dir %s; %s; %d weights; device %s; world %d; meta-step workers %d",
             run.path if run else None, space, model.spec.size, device, world, svi.workers)
    if cfg.steps < svi.step_count:
        raise ConfigError(f"--steps {cfg.steps} is below the {svi.step_count} meta-steps the "
                          f"checkpoint of {run_dir} already holds")
    start = time.perf_counter()
    callback = None if run is None else _chain(checkpoint_callback(run, cfg, space, rank, world),
                                               tensorboard_callback(run, start_step=svi.step_count))
    svi.run(distribution, cfg.steps - svi.step_count, callback=callback, progress=progress)
    seconds = time.perf_counter() - start
    log.info("meta-training done in %.1f s", seconds)
    if world > 1:  # what follows is rank 0's alone: nobody waits on a collective
        tdist.barrier()
        tdist.destroy_process_group()
    refit = None
    if cfg.arch_refit_tasks and rank == 0:
        refit = arch_refit_phase(cfg, svi, distribution, run, space, saved_refit,
                                 progress=progress)
    elif saved_refit is not None and run is not None and run.enabled:
        # resumed with the refit turned off: adaptation starts from meta-training's logits
        save_checkpoint(run.checkpoint, {"svi": svi.state_dict(), "rng": rng_state(),
                                         "config": cfg.to_dict()}, space=space)
    return MetaRun(cfg=cfg, space=space, svi=svi, run=run, device=device, rank=rank,
                   world=world, seconds=seconds, distribution=distribution, arch_refit=refit)
