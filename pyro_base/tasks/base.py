"""Tasks and task distributions: the data side of BASE.

A :class:`Task` is one classification problem ``D_t`` with a *support* split (used by the
inner loop of the optimization-embedding guide) and a *query* split (used to score the adapted
posterior, and by MAML-style meta-updates). A :class:`TaskDistribution` yields tasks for the
``train`` (meta-training), ``val`` and ``test`` (held-out) splits; held-out splits use disjoint
seeds, or disjoint classes for class-subset sources.

Usage::

    from pyro_base.tasks import get_task_distribution
    dist = get_task_distribution("procedural", image_size=16)
    task = dist.sample("train", np.random.default_rng([0, 0]))
    x, y = task.support          # float32 [N, C, H, W], int64 [N]

Images are float32 NCHW tensors, already normalised per source; labels are int64 in
``[0, n_classes)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


@dataclass(frozen=True)
class Task:
    """One classification task: support/query tensors plus metadata.

    ``metadata`` holds at least ``family`` and ``seed`` (or the class subset) and, where known,
    ``class_names``.
    """

    name: str
    n_classes: int
    support: tuple[torch.Tensor, torch.Tensor]
    query: tuple[torch.Tensor, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"task {self.name!r}: n_classes must be >= 2, got {self.n_classes}")
        for split_name, (x, y) in (("support", self.support), ("query", self.query)):
            if x.ndim != 4:
                raise ValueError(
                    f"task {self.name!r}: {split_name} images must be [N, C, H, W], "
                    f"got shape {tuple(x.shape)}"
                )
            if x.shape[0] == 0:
                raise ValueError(f"task {self.name!r}: {split_name} split is empty")
            if y.shape != (x.shape[0],):
                raise ValueError(
                    f"task {self.name!r}: {split_name} labels must have shape ({x.shape[0]},), "
                    f"got {tuple(y.shape)}"
                )
            if y.dtype != torch.int64:
                raise ValueError(f"task {self.name!r}: labels must be int64, got {y.dtype}")
            if int(y.min()) < 0 or int(y.max()) >= self.n_classes:
                raise ValueError(
                    f"task {self.name!r}: {split_name} labels must lie in [0, {self.n_classes}), "
                    f"got range [{int(y.min())}, {int(y.max())}]"
                )

    @property
    def family(self) -> str:
        return str(self.metadata.get("family", self.name))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.support[0].shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> Task:
        """A copy with every tensor on ``device``."""
        return Task(
            name=self.name,
            n_classes=self.n_classes,
            support=(self.support[0].to(device), self.support[1].to(device)),
            query=(self.query[0].to(device), self.query[1].to(device)),
            metadata=dict(self.metadata),
        )


@runtime_checkable
class TaskDistribution(Protocol):
    """A source of tasks. ``sample`` must be a pure function of ``(split, rng state)``."""

    name: str

    def sample(self, split: str, rng: np.random.Generator) -> Task: ...

    def tasks(self, split: str, n: int) -> Iterator[Task]:
        """A fixed, deterministic list of ``n`` tasks of ``split``."""
        ...


_REGISTRY: dict[str, Callable[..., TaskDistribution]] = {}


def register_task_distribution(name: str) -> Callable[[Callable[..., TaskDistribution]], Any]:
    """Class decorator adding a task distribution factory to the registry under ``name``."""

    def deco(factory: Callable[..., TaskDistribution]) -> Any:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"task distribution {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def get_task_distribution(name: str, **options: Any) -> TaskDistribution:
    """Build a registered task distribution by name, passing ``options`` to its constructor."""
    from pyro_base import tasks as _tasks  # noqa: F401  (imports register every source)

    if name not in _REGISTRY:
        raise ValueError(
            f"unknown task distribution {name!r}; available: {sorted(_REGISTRY)}"
        )
    return _REGISTRY[name](**options)


def list_task_distributions() -> list[str]:
    from pyro_base import tasks as _tasks  # noqa: F401

    return sorted(_REGISTRY)
