"""The delta-level decomposition (:mod:`~pyro_base.inference.vi.delta_levels`) of a run.

For the ``W`` meta-training started from (``initial``, ``W_0``) and the one it ended with
(``final``, the checkpoint's ``W`` before any architecture refit or sharpening: the ``W`` the
meta-steps saw), adapts ``tasks_per_family`` training tasks of every family ``seeds`` times
with the run's own inner loop (or one changed by ``inner``: "what if the inner loop were ...",
without meta-training again) at the temperature of the first (last) meta-step, and writes
``agreement.json`` (to ``RUN_DIR/agreement/`` unless told otherwise).

Usage::

    result = agreement_levels("runs/x", tasks_per_family=8, seeds=3, workers=2)
    result["final"]["groups"]["mu_features"]["task"]["cos"]
    print(format_levels(result))
    agreement_levels("runs/x", inner={"inner_batch": 96}, out="runs/x/agreement_b96")
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_base.checkpoint import CheckpointError, load_checkpoint
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import (
    build_guide,
    build_model,
    build_space,
    build_tasks,
)
from pyro_base.inference.run.runlog import CHECKPOINT, CONFIG, RunDir
from pyro_base.inference.vi.delta_levels import KINDS, delta_levels, task_deltas
from pyro_base.inference.vi.diagnostics import parameter_groups
from pyro_base.inference.vi.task_pool import TaskPool
from pyro_base.models.temperature import make_schedule
from pyro_base.tasks.base import Task, TaskDistribution

STARTS = ("initial", "final")
OUT = "agreement"
INNER_KEYS = ("inner_steps", "inner_lr", "arch_lr", "inner_optimizer", "inner_beta1",
              "arch_optimizer", "inner_batch", "weight_posterior")


def train_tasks(source: TaskDistribution, n: int, *, seed: int = 0) -> list[Task]:
    """``n`` meta-training tasks per family: ``(family, "train", j)`` for ``j < n`` where the
    source has families (procedural), else tasks drawn from the train split (seeded by
    ``seed``) until every family seen has ``n``."""
    families = getattr(source, "families", None)
    if families is not None and hasattr(source, "task"):
        return [source.task(f, j, "train") for f in families for j in range(n)]
    grouped: dict[str, list[Task]] = {}
    for i in range(200 * n):
        task = source.sample("train", np.random.default_rng([seed, i]))
        grouped.setdefault(task.family, [])
        if len(grouped[task.family]) < n:
            grouped[task.family].append(task)
        if all(len(v) == n for v in grouped.values()) and i >= 10 * n:
            break
    return [t for v in grouped.values() for t in v]


def agreement_levels(run_dir: str | os.PathLike, *, starts: tuple[str, ...] = STARTS,
                     tasks_per_family: int = 4, seeds: int = 3, seed: int = 0,
                     n_boot: int = 2000, device: str = "cpu", workers: int = 1,
                     progress: bool = False, inner: dict[str, Any] | None = None,
                     out: str | os.PathLike | None = None) -> dict[str, Any]:
    """The decomposition at each of ``starts``, written to ``out`` (default
    ``RUN_DIR/agreement``); ``inner`` replaces settings of the run's inner loop
    (:data:`INNER_KEYS`); ``workers > 1`` adapts a seed's tasks in that many processes (on
    the CPU; the same floats as one process with one torch thread)."""
    run = Path(run_dir)
    missing = [n for n in (CONFIG, CHECKPOINT) if not (run / n).is_file()]
    if missing:
        raise FileNotFoundError(f"run directory {run} lacks {missing}; expected the output "
                                "of scripts/meta_svi.py (config.yaml and checkpoint.pt)")
    bad = [s for s in starts if s not in STARTS]
    if bad or not starts:
        raise ValueError(f"starts must be some of {STARTS}, got {list(starts)}")
    if tasks_per_family < 2:
        raise ValueError(f"tasks_per_family must be >= 2 (pairs of tasks), got {tasks_per_family}")
    if workers < 1 or (workers > 1 and torch.device(device).type != "cpu"):
        raise ValueError(f"workers must be >= 1, and 1 off the CPU; got {workers} on {device}")
    t0 = time.perf_counter()
    inner = dict(inner or {})
    unknown = sorted(set(inner) - set(INNER_KEYS))
    if unknown:
        raise ValueError(f"inner settings must be some of {INNER_KEYS}, got {unknown}")
    cfg = MetaConfig.from_run_file(run / CONFIG).replace(**inner)
    space = build_space(cfg)
    model = build_model(cfg, space, device=device)
    guide = build_guide(cfg, model)
    schedule = make_schedule(cfg.tau_schedule, start=cfg.tau_start, end=cfg.tau_end,
                             steps=cfg.steps)
    state = load_checkpoint(run / CHECKPOINT, space=space, map_location=device)
    Ws = {"initial": {k: v.detach().clone() for k, v in model.W.state_dict().items()}}
    try:
        Ws["final"] = state["svi"]["W"]
    except KeyError as e:
        raise CheckpointError(f"checkpoint {run / CHECKPOINT} holds no W: {e}") from e
    tasks = [t.to(device) for t in train_tasks(build_tasks(cfg, space), tasks_per_family,
                                               seed=seed)]
    groups = parameter_groups(model.spec, model.W.cells)
    result: dict[str, Any] = {"settings": {
        "tasks_per_family": tasks_per_family, "seeds": seeds, "seed": seed, "n_boot": n_boot,
        "families": list(dict.fromkeys(t.family for t in tasks)), "inner": inner,
        **{k: getattr(cfg, k) for k in INNER_KEYS}, "tasks_per_step": cfg.tasks_per_step,
        "workers": workers}}
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(TaskPool(guide, workers=workers)) if workers > 1 else None
        for start in starts:
            model.W.load_state_dict(Ws[start])
            tau = float(schedule(0 if start == "initial" else max(cfg.steps - 1, 0)))
            deltas = task_deltas(model, guide, tasks, seeds=seeds, tau=tau, seed=seed,
                                 arch_update=cfg.arch_update, weight_update=cfg.weight_update,
                                 progress=progress, pool=pool)
            levels = delta_levels(deltas, [t.family for t in tasks], groups, n_boot=n_boot,
                                  seed=seed)
            result[start] = {"temperature": tau, "groups": levels}
    result["seconds"] = time.perf_counter() - t0
    folder = RunDir(run / OUT if out is None else Path(out))
    path = folder.write_json("agreement.json", result)
    return {**result, "path": str(path)}


def format_levels(result: dict[str, Any]) -> str:
    """A markdown table: per start and group, the cosine of each kind of pair [95% interval],
    ``rho`` and the tasks per step that twice the noise would need."""
    lines = ["| start | group | " + " | ".join(f"{k} cos" for k in KINDS)
             + " | rho | tasks for 2x noise |", "|---" * (len(KINDS) + 4) + "|"]
    for start in STARTS:
        for group, v in result.get(start, {}).get("groups", {}).items():
            cells = [f"{v[k]['cos']:+.3f} [{v[k]['lo']:+.3f}, {v[k]['hi']:+.3f}]" for k in KINDS]
            lines.append(f"| {start} | {group} | " + " | ".join(cells)
                         + f" | {v['rho']:+.4f} | {v['tasks_for_2x_noise']:.0f} |")
    return "\n".join(lines)
