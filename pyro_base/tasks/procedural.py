"""Procedural task families: the embedded default task source (no download, any machine).

Each family is a seeded generator of small RGB classification tasks built so that different
families prefer different operations (measured with single-op two-layer networks behind a
1x1 stem, 500 training images; test accuracy):

* ``motif``: each class is a random 3x3 binary motif (same number of on-pixels for every
  class) stamped a few times in random colours -> ``sep_conv_*`` >> dilated >> pools/skip.
* ``dilated_motif``: the same motifs dilated by 2 (isolated dots on a 5x5 footprint) ->
  ``dil_conv_5x5`` / ``dil_conv_3x3`` best.
* ``relation``: the angle bin of the vector between two coloured markers, with distractor
  dots -> large receptive fields (``dil_conv_5x5``, ``sep_conv_5x5``).
* ``cooccurrence``: every palette colour appears once as a 2x2 blob; the class is which pair
  of colours touches -> ``max_pool_3x3`` (no weights) beats convolutions with few images.
* ``colour``: the class is the mean colour, hidden under noise and random blobs -> every op
  ties; ``skip_connect`` is enough.

A task is a pure function of ``(family, split, seed)``: its generator is
``np.random.default_rng([family_index, split_index, seed])``, so splits use disjoint streams.

Usage::

    from pyro_base.tasks.procedural import ProceduralTasks
    dist = ProceduralTasks(families=("motif", "relation"), image_size=16, n_support=200)
    task = dist.sample("train", np.random.default_rng(0))
    task = dist.task("dilated_motif", seed=3, split="test")
    val_tasks = dist.tasks("val", 10)      # deterministic, cycles through the families
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from .base import SPLITS, Task, check_split, register_task_distribution
from .procedural_families import GENERATORS, PALETTE  # PALETTE: re-exported

logger = logging.getLogger(__name__)

__all__ = ["FAMILIES", "GENERATORS", "NORM_STATS", "PALETTE", "ProceduralTasks"]

FAMILIES = ("motif", "dilated_motif", "relation", "cooccurrence", "colour")
# Fixed per-family normalisation (mean, std), measured on 16x16 tasks; applied to all sizes.
NORM_STATS = {
    "motif": (0.04, 0.17),
    "dilated_motif": (0.07, 0.21),
    "relation": (0.04, 0.19),
    "cooccurrence": (0.04, 0.18),
    "colour": (0.50, 0.22),
}


def _labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """Balanced labels in random order."""
    return rng.permutation(np.arange(n) % n_classes)


@register_task_distribution("procedural")
class ProceduralTasks:
    """Seeded procedural classification tasks (see the module docstring for the families).

    Args (keyword-only):
        families: families of :data:`FAMILIES` to draw from; one listed ``k`` times is drawn
            ``k`` times as often by ``sample`` (and by the stratified refit's task list), while
            ``tasks`` and :attr:`distinct_families` take each family once.
        image_size: side of the square RGB images (>= 12).
        n_support, n_query: images per task in each split (balanced over classes, each at
            least the largest number of classes).
        n_classes: ``(low, high)`` inclusive range of classes per task, or one int.
        n_tasks_per_split: if given, ``sample`` draws seeds from ``range(n_tasks_per_split)``
            (a finite task set) and ``tasks(split)`` defaults to that many tasks.
        cache_size: number of generated tasks kept in this instance's LRU cache.
    """

    name = "procedural"

    def __init__(
        self,
        *,
        families: Sequence[str] = FAMILIES,
        image_size: int = 16,
        n_support: int = 200,
        n_query: int = 200,
        n_classes: int | tuple[int, int] = (5, 10),
        n_tasks_per_split: int | None = None,
        cache_size: int = 64,
    ) -> None:
        families = (families,) if isinstance(families, str) else tuple(families)
        unknown = [f for f in families if f not in FAMILIES]
        if not families or unknown:
            raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {families}")
        lo, hi = (n_classes, n_classes) if isinstance(n_classes, int) else tuple(n_classes)
        if not 2 <= lo <= hi <= 10:
            raise ValueError(f"n_classes must satisfy 2 <= low <= high <= 10, got {n_classes}")
        if image_size < 12:
            raise ValueError(f"image_size must be >= 12, got {image_size}")
        for field, value in (("n_support", n_support), ("n_query", n_query)):
            if value < hi:
                raise ValueError(f"{field} must be >= the largest n_classes ({hi}), got {value}")
        if n_tasks_per_split is not None and n_tasks_per_split < 1:
            raise ValueError(f"n_tasks_per_split must be >= 1 or None, got {n_tasks_per_split}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.families = families
        self.distinct_families = tuple(dict.fromkeys(families))
        self.image_size = image_size
        self.n_support, self.n_query = n_support, n_query
        self.n_classes = (lo, hi)
        self.n_tasks_per_split = n_tasks_per_split
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str, int], Task] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"ProceduralTasks(families={self.families}, image_size={self.image_size}, "
            f"n_support={self.n_support}, n_query={self.n_query}, n_classes={self.n_classes})"
        )

    def sample(self, split: str, rng: np.random.Generator) -> Task:
        """A task of ``split`` whose family and seed are drawn from ``rng``."""
        check_split(split)
        family = self.families[int(rng.integers(len(self.families)))]
        seed = int(rng.integers(self.n_tasks_per_split or 2**31))
        return self.task(family, seed, split)

    def tasks(self, split: str, n: int | None = None) -> list[Task]:
        """``n`` fixed tasks of ``split``: seeds 0, 1, ... cycling through the distinct families."""
        check_split(split)
        n = self.n_tasks_per_split if n is None else n
        if n is None or n < 0:
            raise ValueError(f"n must be a non-negative int (or set n_tasks_per_split), got {n}")
        k = len(self.distinct_families)
        return [self.task(self.distinct_families[i % k], i // k, split) for i in range(n)]

    def task(self, family: str, seed: int, split: str = "train") -> Task:
        """The task ``(family, split, seed)``; generated once, then served from the cache."""
        check_split(split)
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        key = (family, split, int(seed))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        task = self._generate(*key)
        if self.cache_size:
            self._cache[key] = task
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return task

    def _generate(self, family: str, split: str, seed: int) -> Task:
        rng = np.random.default_rng([FAMILIES.index(family), SPLITS.index(split), seed])
        n_classes = int(rng.integers(self.n_classes[0], self.n_classes[1] + 1))
        labels = np.concatenate([
            _labels(rng, self.n_support, n_classes), _labels(rng, self.n_query, n_classes)
        ])
        img, class_names = GENERATORS[family](rng, labels, n_classes, self.image_size)
        mean, std = NORM_STATS[family]
        x = torch.from_numpy(((img - mean) / std).astype(np.float32).transpose(0, 3, 1, 2))
        x = x.contiguous()
        y = torch.from_numpy(labels.astype(np.int64))
        ns = self.n_support
        logger.debug("generated procedural task %s/%s/%d", family, split, seed)
        return Task(
            name=f"procedural/{family}/{split}/{seed}",
            n_classes=n_classes,
            support=(x[:ns], y[:ns]),
            query=(x[ns:], y[ns:]),
            metadata={
                "family": family, "seed": seed, "split": split, "source": "procedural",
                "class_names": class_names,
            },
        )
