#!/usr/bin/env python
"""Meta-train BASE across tasks, then adapt to held-out tasks (the main job).

With no arguments: meta-trains on the embedded procedural task families (CPU preset), adapts
to one held-out task per family, and prints, per task, the adapted genotype and the query
accuracy after adaptation from the meta-prior vs. the same number of steps from the untrained
start. Everything is written to a run directory (see pyro_base/runlog.py).

    python scripts/meta_svi.py                                   # defaults, ~5 min on 2 cores
    python scripts/meta_svi.py --config run.yaml --steps 100     # flags override the file
    python scripts/meta_svi.py --resume runs/meta_svi-20261130-0100  # continue a run
    torchrun --nproc-per-node 2 scripts/meta_svi.py --tasks-per-step 8

Before anything is allocated the supernet's memory is estimated (``pyro_base.memory``) and the
run refuses to start if it cannot fit the device (``--no-memory-check`` to skip). Under
``torchrun`` every rank checks after each meta-step that it holds the same ``W`` as the others.
Bad input (config, flags, ``--resume`` of a bad directory or checkpoint, memory) exits with
code 2 and a one-line ``error:`` message; a non-finite loss under ``--nan-policy stop`` exits 1.

Fault injection for tests: ``PYRO_BASE_FAIL_AT=RANK:STEP`` makes rank RANK raise while
sampling the tasks of meta-step STEP (as a failing data source would), before that step's
all-reduce. Read here only; the library never looks at it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch.distributed.elastic.multiprocessing.errors import record

from inference.factory import (
    build_guide,
    build_meta_svi,
    build_model,
    build_space,
    build_tasks,
    resolve_device,
)
from inference.heldout import format_table, genotype_summary, heldout_report
from inference.meta_svi import MetaSVI, NonFiniteLossError
from pyro_base.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pyro_base.config import ConfigError, MetaConfig
from pyro_base.memory import InsufficientMemoryError, check_fits, estimate_memory
from pyro_base.runlog import CONFIG, PRIOR_GENOTYPE, RunDir

log = logging.getLogger("meta_svi")
FAIL_AT_ENV = "PYRO_BASE_FAIL_AT"

HELP = {
    "task_source": "task family source (embedded, no download)",
    "families": "procedural families to meta-train on (default: all five)",
    "n_support": "support images per task (inner loop)",
    "n_query": "query images per task (evaluation / MAML loss)",
    "n_heldout": "held-out test tasks to adapt to after meta-training",
    "preset": "search-space preset",
    "relaxation": "relaxed-categorical flavour of the z sites",
    "kl": "architecture KL: analytic categorical surrogate or Monte Carlo Concrete density",
    "weight_prior": "meta-learned Gaussian N(mu, sigma) or fixed N(0, prior_scale)",
    "arch_prior": "meta-learned Categorical(alpha) or uniform",
    "head": "classifier head location: meta-learned, or zero and not meta-learned (labels "
            "drawn per task make its meta-update noise)",
    "beta": "KL weight (likelihood tempering 1/beta)",
    "init_scale": "initial prior/posterior scale sigma of the weights",
    "inner_steps": "T, inner steps per task during meta-training",
    "inner_lr": "inner step size (weights)",
    "arch_lr": "inner step size (architecture logits); null: inner_lr (adam) or 10 x "
               "inner_lr (sgd)",
    "inner_batch": "support minibatch per inner step",
    "elbo_impl": "inner-loop ELBO: Pyro's TraceMeanField_ELBO, the equal Pyro-free one, or "
                 "that one with the inner step replayed as a CUDA graph (GPU)",
    "batch_tasks": "adapt a step's tasks together in one vmapped inner loop (reptile; "
                   "elbo_impl functional or graph)",
    "mode": "meta-update: reptile (Algorithm 1) or maml (query ELBO through the unroll)",
    "inner_grad": "maml only: first- or second-order unroll",
    "steps": "meta-steps",
    "meta_lr": "meta step size lambda (decays linearly to meta_lr * meta_lr_final)",
    "tau_schedule": "temperature schedule over meta-steps",
    "adapt_steps": "inner steps when adapting to a held-out task",
    "posterior_draws": "draws per held-out task in posterior.nc (az.loo needs ~64+)",
    "device": "auto picks CUDA when available",
    "threads": "torch CPU threads per process (0: torch's default); 1 was as fast as 2 on a "
               "2-core machine and does not slow down when the other core is busy",
    "deterministic": "torch deterministic algorithms (bit-reproducible resume)",
    "nan_policy": "on a NaN/Inf task loss: stop, or skip that task",
    "checkpoint_every": "meta-steps between checkpoints",
    "collective_timeout": "seconds before a stuck all-reduce fails (torchrun)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help="YAML file of settings (flags override it)")
    p.add_argument("--run-dir", type=Path, help="output directory (default runs/meta_svi-TIME)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--no-memory-check", action="store_true",
                   help="skip the memory estimate against the device's free memory")
    hints = typing.get_type_hints(MetaConfig)
    defaults = MetaConfig()
    for f in dataclasses.fields(MetaConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kw: dict[str, Any] = {"help": f"{HELP.get(f.name, f.name.replace('_', ' '))} "
                                      f"(default: {default})", "dest": f.name}
        hint = hints[f.name]
        if hint is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        base_t = base[0]
        if typing.get_origin(base_t) is list:
            p.add_argument(flag, nargs="+", type=str, **kw)
        else:
            p.add_argument(flag, type=base_t, **kw)
    return p


def resolve_config(args: argparse.Namespace) -> MetaConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(MetaConfig)
                 if hasattr(args, f.name)}
    if getattr(args, "resume", None) is not None:
        path = args.resume / CONFIG
        if not path.is_file():
            raise ConfigError(f"--resume {args.resume}: no {CONFIG} there; is it a run "
                              "directory written by scripts/meta_svi.py?")
        return MetaConfig.from_yaml(path, **overrides)
    if getattr(args, "config", None) is not None:
        return MetaConfig.from_yaml(args.config, **overrides)
    try:
        return MetaConfig(**overrides)
    except ConfigError as e:
        raise ConfigError(f"command line: {e}") from None


def init_distributed(cfg: MetaConfig, device: torch.device) -> tuple[int, int, torch.device]:
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
    est = estimate_memory(space, batch,
                          unrolled_steps=max(unrolled, 1),
                          straight_through=cfg.relaxation == "straight_through")
    check_fits(est, device)


RESUME_MAY_CHANGE = frozenset({
    "steps", "n_heldout", "adapt_steps", "adapt_temperature", "num_samples", "posterior_draws",
    "device", "threads", "checkpoint_every", "collective_timeout", "nan_policy", "max_bad_steps"})


def check_resumable(cfg: MetaConfig, saved: dict[str, Any], path: Path) -> None:
    """Refuse a resume whose settings change what the saved meta-steps computed."""
    current = cfg.to_dict()
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


class FaultyTasks:
    """Test hook (``PYRO_BASE_FAIL_AT=RANK:STEP``): rank RANK fails sampling step STEP."""

    def __init__(self, inner: Any, svi: MetaSVI, rank: int, spec: str) -> None:
        try:
            self.fail_rank, self.fail_step = (int(v) for v in spec.split(":"))
        except ValueError:
            raise ConfigError(f"{FAIL_AT_ENV} must be RANK:STEP, got {spec!r}") from None
        self.inner, self.svi, self.rank = inner, svi, rank

    def sample(self, split: str, rng: Any) -> Any:
        if (self.rank, self.svi.step_count) == (self.fail_rank, self.fail_step):
            raise RuntimeError(f"injected fault ({FAIL_AT_ENV}) on rank {self.rank} while "
                               f"sampling the tasks of meta-step {self.fail_step}")
        return self.inner.sample(split, rng)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def replica_spread(svi: MetaSVI) -> float:
    """Largest difference of any weight of W across ranks (one MAX and one MIN all-reduce)."""
    flat = torch.cat([p.detach().reshape(-1).double()
                      for p in svi.model.W.named_tensors().values()])
    hi, lo = flat.clone(), flat.clone()
    tdist.all_reduce(hi, op=tdist.ReduceOp.MAX)
    tdist.all_reduce(lo, op=tdist.ReduceOp.MIN)
    return float((hi - lo).max())


def checkpoint_callback(run: RunDir, cfg: MetaConfig, space: Any, rank: int, world: int,
                        ) -> Any:
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


def main(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    try:  # values MetaConfig accepts but the device, search space or task source refuse
        device = resolve_device(cfg.device)
        space = build_space(cfg)
        distribution = build_tasks(cfg, space)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, device = init_distributed(cfg, device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    check_tasks_fit(cfg, distribution, space)
    if not getattr(args, "no_memory_check", False):
        check_memory(cfg, space, device)
    run_path = getattr(args, "resume", None) or getattr(args, "run_dir", None) or Path(
        "runs") / time.strftime("meta_svi-%Y%m%d-%H%M%S")
    run = RunDir(run_path, enabled=rank == 0)
    run.setup_logging()
    model = build_model(cfg, space, device=device)
    svi = build_meta_svi(cfg, model, build_guide(cfg, model))
    if os.environ.get(FAIL_AT_ENV):
        distribution = FaultyTasks(distribution, svi, rank, os.environ[FAIL_AT_ENV])
    if getattr(args, "resume", None) is not None and run.checkpoint.exists():
        # RNG states must stay on the CPU; load_state_dict copies W onto the device
        state = load_checkpoint(run.checkpoint, space=space, map_location="cpu")
        check_resumable(cfg, state.get("config", {}), run.checkpoint)
        svi.load_state_dict(state["svi"])
        set_rng_state(state["rng"])
        run.truncate_metrics(svi.step_count)
        for stale in run.remove_stale_temps():
            log.warning("removed %s, left by a run killed while saving", stale)
        log.info("resumed %s at meta-step %d", run.path, svi.step_count)
    else:
        run.truncate_metrics(0)  # a fresh start in a used directory keeps no old step lines
    if rank == 0:
        cfg.to_yaml(run / CONFIG)
    log.info("run dir %s; %s; %d weights; device %s; world %d", run.path, space,
             model.spec.size, device, world)

    start = time.perf_counter()
    svi.run(distribution, cfg.steps, callback=checkpoint_callback(run, cfg, space, rank, world),
            progress=not getattr(args, "no_progress", False))
    log.info("meta-training done in %.1f s", time.perf_counter() - start)
    if world > 1:  # the held-out report is rank 0's alone: nobody waits on a collective
        tdist.barrier()
        tdist.destroy_process_group()
    if rank == 0:
        prior = svi.guide.prior_posterior().genotype(space)
        run.write_json(PRIOR_GENOTYPE, prior.to_dict())
        rows = heldout_report(cfg, svi.model, svi.guide, run, device=device)
        print(f"\nmeta-prior genotype: {genotype_summary(prior)}")
        print(f"held-out tasks (a quick look; scripts/evaluate.py RUN_DIR for the paired, "
              f"powered evaluation), query accuracy after {cfg.adapt_steps} adaptation steps "
              "(meta = from the meta-prior, 0-shot = the supernet at W unadapted, untrn = from "
              "the untrained start):")
        print(format_table(rows))
        print(f"\nrun directory: {run.path}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run; bad input returns 2 with one ``error:`` line on stderr."""
    args = build_parser().parse_args(argv)  # bad flags: argparse's usage message, exit 2
    try:
        return main(args)
    except (ConfigError, CheckpointError, FileNotFoundError, InsufficientMemoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(record(cli)())  # record: under torchrun a rank's uncaught error is the root cause
