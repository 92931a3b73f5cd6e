"""Digits tasks: class-subset tasks over scikit-learn's bundled 8x8 digits (no download).

Each task picks ``n_classes`` of the ten digits, draws balanced support and query images
(disjoint within the task), upsamples them to ``image_size`` RGB, and applies per-task
nuisances: a colour tint (foreground and background colours), a random shift of up to
``jitter`` pixels per image, and optionally one of the ``variants``:

* ``"rotate"``: a fixed rotation by 90, 180 or 270 degrees for the whole task;
* ``"permute"``: a fixed pixel permutation for the whole task (kills spatial structure).

A task is a pure function of ``(split, seed)`` through ``np.random.default_rng([split_index,
seed])``; splits use disjoint seed streams. With ``holdout_classes`` the ``val`` and ``test``
splits draw only from held-out digits and ``train`` only from the others.

Usage::

    from pyro_base.tasks.digits import DigitsTasks
    dist = DigitsTasks(n_classes=5, variants=("plain", "rotate"), holdout_classes=(7, 8, 9))
    task = dist.sample("train", np.random.default_rng(0))
    test = dist.tasks("test", 10)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from .base import SPLITS, Task, check_split, register_task_distribution
from .transforms import resize

logger = logging.getLogger(__name__)

VARIANTS = ("plain", "rotate", "permute")
NORM_STATS = (0.32, 0.21)  # mean, std of tinted images (all channels), fixed for this source


def _split_pools(
    holdout_classes: int | Sequence[int] | None,
) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
    """The held-out digits and each split's pool of digits (see ``DigitsTasks``)."""
    if isinstance(holdout_classes, int):
        if not 0 <= holdout_classes <= 8:
            raise ValueError(f"holdout_classes must be in 0..8, got {holdout_classes}")
        holdout_classes = tuple(range(10 - holdout_classes, 10))
    held = tuple(sorted(set(holdout_classes or ())))
    if any(c not in range(10) for c in held):
        raise ValueError(f"holdout_classes must be digits in 0..9, got {holdout_classes}")
    if not held:
        return held, {s: tuple(range(10)) for s in SPLITS}
    rest = tuple(c for c in range(10) if c not in held)
    return held, {"train": rest, "val": held, "test": held}


def _class_range(
    n_classes: int | tuple[int, int], pools: dict[str, tuple[int, ...]]
) -> tuple[int, int]:
    """``n_classes`` as an inclusive ``(low, high)``, checked against every split's pool."""
    lo, hi = (n_classes, n_classes) if isinstance(n_classes, int) else tuple(n_classes)
    if lo < 2 or lo > hi:
        raise ValueError(f"n_classes must satisfy 2 <= low <= high, got {n_classes}")
    for split, pool in pools.items():
        if hi > len(pool):
            raise ValueError(
                f"n_classes={n_classes} asks for up to {hi} classes but the {split!r} split "
                f"has only {len(pool)} digits available: {list(pool)}"
            )
    return lo, hi


def _check_sizes(image_size: int, jitter: int, n_support: int, n_query: int, hi: int) -> None:
    """Validate the image size, jitter and split sizes (``hi``: the most classes per task)."""
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if not 0 <= jitter < image_size // 2:
        raise ValueError(f"jitter must be in [0, image_size // 2), got {jitter}")
    if n_support < hi or n_query < hi:
        raise ValueError(
            f"n_support and n_query must be >= the largest n_classes ({hi}), "
            f"got n_support={n_support}, n_query={n_query}"
        )


def _load_digits(
    n_support: int, n_query: int, lo: int, image_size: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Indices of each digit class and all images resized to ``[N, image_size, image_size]``.

    Raises if a task with ``lo`` classes would need more images of one class than exist.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    by_class = [np.flatnonzero(data.target == c) for c in range(10)]
    per_task = -(-n_support // lo) - (-n_query // lo)  # most images one class must give
    smallest = min(len(i) for i in by_class)
    if per_task > smallest:
        raise ValueError(
            f"n_support={n_support}, n_query={n_query} over {lo} classes needs {per_task} "
            f"images per class; the smallest digit class has {smallest}"
        )
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    return by_class, resize(images, image_size).clamp_(0.0, 1.0)[:, 0].numpy()


@register_task_distribution("digits")
class DigitsTasks:
    """Class-subset tasks over ``sklearn.datasets.load_digits``.

    Args (keyword-only):
        n_classes: classes per task: an int or an inclusive ``(low, high)`` range.
        n_support, n_query: images per task in each split (balanced over classes).
        image_size: side of the square RGB images (the 8x8 digits are upsampled).
        jitter: maximum random shift in pixels (at ``image_size``), per image.
        variants: variants drawn per task, from :data:`VARIANTS`.
        holdout_classes: digits reserved for ``val``/``test`` (an int ``k`` reserves the
            last ``k`` digits); ``train`` tasks use the rest. None: every split uses all ten.
        n_tasks_per_split: if given, ``sample`` draws seeds from ``range(n_tasks_per_split)``
            and ``tasks(split)`` defaults to that many.
        cache_size: tasks kept in this instance's LRU cache.
    """

    name = "digits"

    def __init__(
        self,
        *,
        n_classes: int | tuple[int, int] = 5,
        n_support: int = 100,
        n_query: int = 100,
        image_size: int = 16,
        jitter: int = 1,
        variants: Sequence[str] = ("plain",),
        holdout_classes: int | Sequence[int] | None = None,
        n_tasks_per_split: int | None = None,
        cache_size: int = 64,
    ) -> None:
        variants = (variants,) if isinstance(variants, str) else tuple(variants)
        if not variants or any(v not in VARIANTS for v in variants):
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {variants}")
        held, self.pools = _split_pools(holdout_classes)
        lo, hi = _class_range(n_classes, self.pools)
        _check_sizes(image_size, jitter, n_support, n_query, hi)
        if n_tasks_per_split is not None and n_tasks_per_split < 1:
            raise ValueError(f"n_tasks_per_split must be >= 1 or None, got {n_tasks_per_split}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.by_class, self._images = _load_digits(n_support, n_query, lo, image_size)
        self.n_classes, self.n_support, self.n_query = (lo, hi), n_support, n_query
        self.image_size, self.jitter, self.variants = image_size, jitter, variants
        self.holdout_classes = held
        self.n_tasks_per_split, self.cache_size = n_tasks_per_split, cache_size
        self._cache: OrderedDict[tuple[str, int], Task] = OrderedDict()

    def sample(self, split: str, rng: np.random.Generator) -> Task:
        """A task of ``split`` with a seed drawn from ``rng``."""
        check_split(split)
        return self.task(int(rng.integers(self.n_tasks_per_split or 2**31)), split)

    def tasks(self, split: str, n: int | None = None) -> list[Task]:
        """``n`` fixed tasks of ``split`` (seeds ``0..n-1``)."""
        check_split(split)
        n = self.n_tasks_per_split if n is None else n
        if n is None or n < 0:
            raise ValueError(f"n must be a non-negative int (or set n_tasks_per_split), got {n}")
        return [self.task(seed, split) for seed in range(n)]

    def task(self, seed: int, split: str = "train") -> Task:
        """The task ``(split, seed)``, generated once and then served from the cache."""
        check_split(split)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        key = (split, int(seed))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        task = self._generate(split, int(seed))
        if self.cache_size:
            self._cache[key] = task
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return task

    def _generate(self, split: str, seed: int) -> Task:
        rng = np.random.default_rng([SPLITS.index(split), seed])
        n_classes = int(rng.integers(self.n_classes[0], self.n_classes[1] + 1))
        classes = np.sort(rng.choice(self.pools[split], n_classes, replace=False))
        variant = self.variants[int(rng.integers(len(self.variants)))]
        labels = [rng.permutation(np.arange(n) % n_classes) for n in (self.n_support, self.n_query)]
        # Distinct images per class across support and query.
        picks = [rng.permutation(self.by_class[c]) for c in classes]
        counts = np.zeros(n_classes, int)
        index = []
        for lab in labels:
            idx = np.empty(len(lab), int)
            for k in range(n_classes):
                where = np.flatnonzero(lab == k)
                idx[where] = picks[k][counts[k] : counts[k] + len(where)]
                counts[k] += len(where)
            index.append(idx)
        x = self._images[np.concatenate(index)]  # [N, S, S] in [0, 1]
        s, j = self.image_size, self.jitter
        if j:
            padded = np.pad(x, ((0, 0), (j, j), (j, j)))
            oy, ox = rng.integers(0, 2 * j + 1, (2, len(x)))
            rows = (oy[:, None] + np.arange(s))[:, :, None]
            cols = (ox[:, None] + np.arange(s))[:, None, :]
            x = padded[np.arange(len(x))[:, None, None], rows, cols]
        meta: dict = {}
        if variant == "rotate":
            meta["rotation"] = 90 * int(rng.integers(1, 4))
            x = np.rot90(x, meta["rotation"] // 90, axes=(1, 2))
        elif variant == "permute":
            x = x.reshape(len(x), -1)[:, rng.permutation(s * s)].reshape(-1, s, s)
        fg = rng.uniform(0.5, 1.0, 3)
        bg = rng.uniform(0.0, 0.3, 3)
        img = bg + x[..., None] * (fg - bg)  # [N, S, S, 3]
        mean, std = NORM_STATS
        out = torch.from_numpy(((img - mean) / std).astype(np.float32).transpose(0, 3, 1, 2))
        out = out.contiguous()
        y = torch.from_numpy(np.concatenate(labels).astype(np.int64))
        ns = self.n_support
        logger.debug("generated digits task %s/%d (classes %s)", split, seed, classes)
        return Task(
            name=f"digits/{split}/{seed}",
            n_classes=n_classes,
            support=(out[:ns], y[:ns]),
            query=(out[ns:], y[ns:]),
            metadata={
                "family": "digits", "seed": seed, "split": split, "source": "digits",
                "classes": [int(c) for c in classes], "class_names": [str(c) for c in classes],
                "variant": variant, **meta,
            },
        )
