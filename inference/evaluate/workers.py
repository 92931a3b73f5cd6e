"""Evaluate independent units in worker processes started with "spawn", in submission order.

Each worker process (:func:`~pyro_base.processes.spawn_pool`: it exits when this one does)
sets one torch thread, builds its context once with
``setup(*setup_args)``, then returns ``unit(context, *args)`` for every unit it is handed.
``setup`` and ``unit`` must be module-level functions: they are pickled by their import path
and imported again in each spawned process (so are ``setup_args`` and the units' arguments).
The records come back in the order of ``units``, whatever order the workers finish in; an
error in a unit cancels the units not yet started and is raised once the running ones end.

Usage::

    # in module pyro_base.inference.evaluate.paired (module-level, hence picklable):
    #   def _worker_context(run_path, ...) -> Context: ...
    #   def _worker_unit(context, fi, ti) -> dict: ...
    records = evaluate_parallel([(0, 0), (0, 1), (1, 0)], workers=2, setup=_worker_context,
                                setup_args=(str(run_path), ...), unit=_worker_unit)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from tqdm.auto import tqdm

from pyro_base.processes import spawn_pool

__all__ = ["evaluate_parallel"]

_WORKER: dict[str, Any] = {}  # a worker process's context and unit function


def _init_worker(setup: Callable[..., Any], setup_args: tuple[Any, ...],
                 unit: Callable[..., Any]) -> None:
    """A worker process's initializer: its context."""
    _WORKER.update(context=setup(*setup_args), unit=unit)


def _worker_unit(*args: Any) -> Any:
    """One unit in a worker process (see :func:`_init_worker`)."""
    return _WORKER["unit"](_WORKER["context"], *args)


def evaluate_parallel(units: Sequence[tuple[Any, ...]], workers: int, *,
                      setup: Callable[..., Any], setup_args: tuple[Any, ...],
                      unit: Callable[..., Any], progress: bool = False,
                      desc: str = "evaluate") -> list[Any]:
    """``unit(context, *u)`` for every ``u`` in ``units``, in that order, from ``workers``
    spawned processes (each with its own ``context = setup(*setup_args)``)."""
    records: list[Any] = [None] * len(units)
    with spawn_pool(workers, initializer=_init_worker,
                    initargs=(setup, setup_args, unit)) as pool, \
            tqdm(total=len(units), disable=not progress, desc=desc) as bar:
        pending: dict[Future, int] = {pool.submit(_worker_unit, *u): i
                                      for i, u in enumerate(units)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    records[pending.pop(future)] = future.result()
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return records
