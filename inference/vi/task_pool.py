"""The tasks of a Reptile meta-step adapted in worker processes on a CPU.

Given ``W``, a meta-step's tasks are independent: task ``c`` of step ``e`` draws its noise
from the seed of ``(seed, e, c)`` (:func:`~pyro_base.inference.vi.meta_common.task_seed`).
:class:`TaskPool` adapts them in ``workers`` processes (:func:`~pyro_base.processes.spawn_pool`:
"spawn", one torch thread each, ending with this one), each holding a copy of the model and
guide, and hands them ``W`` and the tasks every step. A worker returns a task's metrics, its
contribution ``W - phi_c^T`` (:func:`~pyro_base.inference.vi.task_updates.reptile_contribution`)
and the RNG state it left; this process adds the contributions to the step's sums in task
order and takes the last task's RNG state. So a step's update, its metrics and the RNG state
after it equal, float for float, those of one process with one torch thread, whatever the
number of workers; with 4 tasks per step, 2 workers take a little over half the time of a
step on 2 cores.

Usage::

    with TaskPool(guide, workers=2) as pool:    # MetaSVI(model, guide, workers=2) makes one
        records = pool.updates(ctx, list(enumerate(tasks)))   # as task_update, task by task
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_common import task_seed
from pyro_base.inference.vi.task_updates import (
    StepContext,
    accumulate,
    adapt_task,
    reptile_contribution,
)
from pyro_base.processes import spawn_pool
from pyro_base.tasks.base import Task

__all__ = ["TaskPool"]

# what a worker needs of the step besides W and its task
_SCALARS = ("mode", "inner_grad", "seed", "log_query", "step", "tau", "arch_update",
            "weight_update")
_WORKER: dict[str, Any] = {}  # a worker process's guide (and its model)


def _init_worker(guide_bytes: bytes, deterministic: bool, warn_only: bool) -> None:
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    _WORKER["guide"] = pickle.loads(guide_bytes)


def _not_here(*args: Any) -> None:  # a worker's on_bad: this process decides
    raise AssertionError("a worker never calls on_bad")


def _worker_task(payload: bytes) -> bytes:
    """Adapt task ``c`` from ``W`` in a worker (``payload``: ``W``, the step's scalars, ``c``
    and the task, pickled); its metrics, contribution, inner losses and the RNG state it
    leaves, pickled."""
    W, scalars, c, task = pickle.loads(payload)
    guide = _WORKER["guide"]
    guide.model.W.load_state_dict(W)
    ctx = StepContext(model=guide.model, guide=guide, acc={}, deltas=[], on_bad=_not_here,
                      **scalars)
    post, losses = adapt_task(ctx, task, c)
    rec, delta = reptile_contribution(ctx, task, post, losses)
    return pickle.dumps((rec, delta, losses, torch.get_rng_state()))


class TaskPool:
    """``workers`` processes that adapt a Reptile meta-step's tasks (see the module docstring).

    Everything crosses between the processes as plain pickled bytes, so a worker holds its own
    copy of the guide and model and never shares memory with this process (``multiprocessing``
    would otherwise move the tensors it sends into shared memory).

    :param guide: the guide (with its model, on the CPU) every worker copies once; the workers
        also take this process's ``torch.use_deterministic_algorithms`` setting (and
        ``warn_only``), and run one torch thread each.
    :param workers: the number of processes, at least 2.
    """

    def __init__(self, guide: OptimizationEmbeddingGuide, *, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"a TaskPool needs workers >= 2, got {workers}")
        device = guide.model.W.mu.device
        if device.type != "cpu":
            raise ValueError(f"a TaskPool adapts on the CPU; the model is on {device}")
        try:  # fail here, in words, not in a worker
            guide_bytes = pickle.dumps(guide)
        except Exception as e:
            raise ValueError(f"workers > 1 copies the guide and its model into each worker "
                             f"process with pickle, and this one cannot be pickled ({e}); "
                             f"use workers=1") from e
        self.workers = workers
        self._pool = spawn_pool(workers, initializer=_init_worker,
                                initargs=(guide_bytes, torch.are_deterministic_algorithms_enabled(),
                                          torch.is_deterministic_algorithms_warn_only_enabled()))

    def updates(self, ctx: StepContext, tasks: list[tuple[int, Task]]) -> list[dict[str, Any]]:
        """Adapt ``tasks`` [(c, task)] from ``ctx.model``'s ``W`` in the workers and add their
        contributions to ``ctx`` in order; returns their metrics, as
        :func:`~pyro_base.inference.vi.task_updates.task_update` would one by one (and leaves
        the RNGs where it would: seeded by each task in turn, the CPU generator's state the
        one that task's draws left, also when ``ctx.on_bad`` raises at a task)."""
        if ctx.mode != "reptile":
            raise ValueError(f"a TaskPool takes Reptile steps, got mode={ctx.mode!r}")
        W = {k: v.detach() for k, v in ctx.model.W.state_dict().items()}
        scalars = {k: getattr(ctx, k) for k in _SCALARS}
        futures = [self._pool.submit(_worker_task, pickle.dumps((W, scalars, c, task)))
                   for c, task in tasks]
        try:
            results = [pickle.loads(f.result()) for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        records = []
        for (c, task), (rec, delta, losses, rng) in zip(tasks, results, strict=True):
            torch.manual_seed(task_seed(ctx.seed, ctx.step, c))  # every generator, as there
            torch.set_rng_state(rng)
            records.append(accumulate(ctx, task, rec, delta, losses))
        return records

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
