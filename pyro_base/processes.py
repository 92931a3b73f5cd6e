"""Worker processes for CPU parallelism: spawned, one torch thread each, ending with their parent.

A ``ProcessPoolExecutor`` worker waits for work on its call queue, and a "spawn" child holds
both ends of that queue's pipe, so a worker whose parent is killed (``kill -9``, the OOM
killer) never sees the pipe close and waits forever. The workers of :func:`spawn_pool` watch
their parent's sentinel from a daemon thread and exit when the parent does.

Usage::

    with spawn_pool(2, initializer=setup, initargs=(cfg,)) as pool:   # setup: module-level
        results = list(pool.map(unit, units))
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["spawn_pool"]


def _exit_with_parent() -> None:
    """In a spawned child: exit (status 1) as soon as the parent process ends."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    _exit_with_parent()
    if initializer is not None:
        initializer(*initargs)


def spawn_pool(workers: int, *, initializer: Callable[..., Any] | None = None,
               initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started with "spawn", each with one torch thread, that
    exit when this process ends; ``initializer(*initargs)`` runs once in each (it and its
    arguments are pickled: a module-level function)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(initializer, initargs))
