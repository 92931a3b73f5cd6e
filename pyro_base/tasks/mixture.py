"""A mixture of task distributions: the source by weight, then the task from that source.

Usage::

    tasks = MixtureTasks([ProceduralTasks(image_size=16), DigitsTasks(image_size=16)],
                         weights=[3, 1])
    task = tasks.sample("train", np.random.default_rng(0))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pyro_base.tasks.base import Task


class MixtureTasks:
    """Tasks drawn from several task distributions: the source by ``weights``, then the task
    from that source, both with the same ``rng`` (a pure function of its state)."""

    name = "mixture"

    def __init__(self, sources: Sequence[Any], *, weights: Sequence[float]) -> None:
        if not sources or len(sources) != len(weights) or min(weights) <= 0:
            raise ValueError(f"weights must be one positive number per source, got {weights}")
        self.sources = tuple(sources)
        self.p = np.asarray(weights, float) / float(sum(weights))

    def sample(self, split: str, rng: np.random.Generator) -> Task:
        return self.sources[int(rng.choice(len(self.sources), p=self.p))].sample(split, rng)

    def tasks(self, split: str, n: int) -> Iterator[Task]:
        """``n`` fixed tasks (task ``i`` from ``default_rng([i, 11])``), named
        ``<its name>/<i>`` so that names stay distinct across sources."""
        return iter([dataclasses.replace(t, name=f"{t.name}/{i}") for i, t in enumerate(
            self.sample(split, np.random.default_rng([i, 11])) for i in range(n))])
