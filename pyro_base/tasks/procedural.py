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
from collections.abc import Callable, Sequence
from itertools import combinations, product

import numpy as np
import torch

from .base import SPLITS, Task, check_split, register_task_distribution

logger = logging.getLogger(__name__)

FAMILIES = ("motif", "dilated_motif", "relation", "cooccurrence", "colour")
# Fixed per-family normalisation (mean, std), measured on 16x16 tasks; applied to all sizes.
NORM_STATS = {
    "motif": (0.04, 0.17),
    "dilated_motif": (0.07, 0.21),
    "relation": (0.04, 0.19),
    "cooccurrence": (0.04, 0.18),
    "colour": (0.50, 0.22),
}
PALETTE = (
    ("red", (1.0, 0.1, 0.1)), ("green", (0.1, 0.9, 0.1)), ("blue", (0.15, 0.3, 1.0)),
    ("yellow", (1.0, 0.9, 0.1)), ("magenta", (0.9, 0.1, 0.9)), ("cyan", (0.1, 0.9, 0.9)),
    ("orange", (1.0, 0.5, 0.0)), ("white", (0.95, 0.95, 0.95)),
)
_NOISE = 0.04


def _labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """Balanced labels in random order."""
    return rng.permutation(np.arange(n) % n_classes)


def _motifs(rng: np.random.Generator, k: int, n_on: int = 5) -> np.ndarray:
    """``k`` distinct 3x3 binary motifs, each with ``n_on`` ones and a full 3x3 extent."""
    found: list[np.ndarray] = []
    while len(found) < k:
        m = np.zeros(9, bool)
        m[rng.choice(9, n_on, replace=False)] = True
        m = m.reshape(3, 3)
        if m.any(0).all() and m.any(1).all() and not any((m == f).all() for f in found):
            found.append(m)
    return np.stack(found)


def _stamp_motifs(
    rng, labels, n_classes, size, dilation, clutter=0.3
) -> tuple[np.ndarray, list[str]]:
    n = len(labels)
    motifs = _motifs(rng, n_classes)[labels]  # [N, 3, 3]
    n_stamps = max(2, round(3 * size * size / 256))
    span = 2 * dilation + 1
    img = rng.normal(0.0, _NOISE, (n, size, size, 3))
    pos = rng.integers(0, size - span + 1, (n, n_stamps, 2))
    col = rng.uniform(0.35, 1.0, (n, n_stamps, 3))
    rows = np.arange(n)
    if dilation > 1:  # clutter between the dots: only a dilated kernel sees the motif cleanly
        for s, (dy, dx) in product(range(n_stamps), product(range(span), range(span))):
            if dy % dilation or dx % dilation:
                on = rng.random(n) < clutter
                img[rows[on], pos[on, s, 0] + dy, pos[on, s, 1] + dx] = rng.uniform(
                    0.35, 1.0, (int(on.sum()), 3))
    for s, (dy, dx) in product(range(n_stamps), product(range(3), range(3))):
        on = motifs[:, dy, dx]
        r, c = pos[on, s, 0] + dy * dilation, pos[on, s, 1] + dx * dilation
        img[rows[on], r, c] = col[on, s]
    name = "dilated_motif" if dilation > 1 else "motif"
    return img, [f"{name}_{k}" for k in range(n_classes)]


def _gen_motif(rng, labels, n_classes, size):
    return _stamp_motifs(rng, labels, n_classes, size, dilation=1)


def _gen_dilated_motif(rng, labels, n_classes, size):
    return _stamp_motifs(rng, labels, n_classes, size, dilation=2)


def _gen_relation(rng, labels, n_classes, size, marker=2, n_distract=3):
    n = len(labels)
    ia, ib, *rest = rng.permutation(len(PALETTE))
    colours = np.array([c for _, c in PALETTE])
    phase = rng.uniform(0, 2 * np.pi)
    width = 2 * np.pi / n_classes
    dx = np.zeros(n, int)
    dy = np.zeros(n, int)
    todo = np.ones(n, bool)
    while todo.any():  # resample until the rounded offset still lies in the class's angle bin
        m = int(todo.sum())
        theta = phase + (labels[todo] + rng.uniform(0.15, 0.85, m)) * width
        r = rng.uniform(0.3 * size, 0.45 * size, m)
        dx[todo], dy[todo] = np.rint(r * np.cos(theta)), np.rint(r * np.sin(theta))
        got = np.floor(((np.arctan2(dy, dx) - phase) % (2 * np.pi)) / width).astype(int)
        todo = got != labels
    m = marker - 1  # markers and distractors are marker x marker squares
    ax = rng.integers(np.maximum(0, -dx), size - m - np.maximum(0, dx))
    ay = rng.integers(np.maximum(0, -dy), size - m - np.maximum(0, dy))
    img = rng.normal(0.0, _NOISE, (n, size, size, 3))
    n_distract = max(2, round(n_distract * size * size / 256))
    pts = rng.integers(0, size - m, (n, n_distract, 2))
    which = rng.choice(np.array(rest), (n, n_distract))
    rows = np.arange(n)
    for j, (a, b) in product(range(n_distract), product(range(marker), range(marker))):
        img[rows, pts[:, j, 0] + a, pts[:, j, 1] + b] = colours[which[:, j]]
    for a, b in product(range(marker), range(marker)):
        img[rows, ay + a, ax + b] = colours[ia]
        img[rows, ay + dy + a, ax + dx + b] = colours[ib]
    lo = np.degrees(phase + np.arange(n_classes) * width) % 360
    return img, [f"angle_{a:.0f}-{(a + np.degrees(width)) % 360:.0f}" for a in lo]


def _gen_cooccurrence(rng, labels, n_classes, size):
    n = len(labels)
    n_pal = next(p for p in range(3, 9) if p * (p - 1) // 2 >= n_classes)
    pal = rng.choice(len(PALETTE), n_pal, replace=False)
    pairs = list(combinations(range(n_pal), 2))
    pairs = [pairs[i] for i in rng.choice(len(pairs), n_classes, replace=False)]
    g = size // 4  # grid of 4x4 cells; a lone 2x2 blob in a cell never touches another cell's
    # The touching pair fills a 2x4 (or 4x2) bar inside two neighbouring cells.
    vertical = rng.random(n) < 0.5
    pr, pc = rng.integers(0, g, n), rng.integers(0, g - 1, n)
    pr, pc = np.where(vertical, pc, pr), np.where(vertical, pr, pc)
    keys = rng.random((n, g * g))
    rows = np.arange(n)
    keys[rows, pr * g + pc] = np.inf
    keys[rows, (pr + vertical) * g + pc + ~vertical] = np.inf
    cells = np.argsort(keys, 1)[:, : n_pal - 2]
    pair = np.array(pairs)[labels]  # [N, 2] palette indices
    swap = rng.random(n) < 0.5
    pair = np.where(swap[:, None], pair[:, ::-1], pair)
    in_pair = (np.arange(n_pal)[None, :, None] == pair[:, None, :]).any(-1)
    others = np.argsort(rng.random((n, n_pal)) + 2.0 * in_pair, 1)[:, : n_pal - 2]
    colours = np.array([PALETTE[i][1] for i in pal]) * rng.uniform(0.8, 1.0, (n, n_pal, 1))
    img = rng.normal(0.0, _NOISE, (n, size, size, 3))
    off = rng.integers(0, 2, (n, n_pal, 2))
    along = rng.integers(0, 3, n)  # offset of the bar along its long side
    y0 = 4 * pr + np.where(vertical, along, off[:, 0, 0])
    x0 = 4 * pc + np.where(vertical, off[:, 0, 1], along)
    for k, (a, b) in product(range(2), product(range(2), range(2))):
        r, c = y0 + a + 2 * k * vertical, x0 + b + 2 * k * ~vertical
        img[rows, r, c] = colours[rows, pair[:, k]]
    for j in range(n_pal - 2):
        cy, cx = 4 * (cells[:, j] // g) + off[:, j + 2, 0], 4 * (cells[:, j] % g) + off[:, j + 2, 1]
        for a, b in product(range(2), range(2)):
            img[rows, cy + a, cx + b] = colours[rows, others[:, j]]
    names = [PALETTE[i][0] for i in pal]
    return img, [f"{names[a]}+{names[b]}" for a, b in pairs]


def _gen_colour(rng, labels, n_classes, size):
    n = len(labels)
    protos = rng.uniform(0.2, 0.8, (n_classes, 3))
    img = protos[labels][:, None, None, :] + rng.normal(0.0, 0.06, (n, 1, 1, 3))
    img = img + rng.normal(0.0, 0.1, (n, size, size, 3))
    n_blobs = max(2, round(3 * size * size / 256))
    pos = rng.integers(0, size - 2, (n, n_blobs, 2))
    col = rng.uniform(0.0, 1.0, (n, n_blobs, 3))
    rows = np.arange(n)
    for j, (a, b) in product(range(n_blobs), product(range(3), range(3))):
        img[rows, pos[:, j, 0] + a, pos[:, j, 1] + b] = col[:, j]
    return img, ["colour_#" + "".join(f"{int(255 * v):02x}" for v in p) for p in protos]


_GENERATORS: dict[str, Callable[..., tuple[np.ndarray, list[str]]]] = {
    "motif": _gen_motif,
    "dilated_motif": _gen_dilated_motif,
    "relation": _gen_relation,
    "cooccurrence": _gen_cooccurrence,
    "colour": _gen_colour,
}


@register_task_distribution("procedural")
class ProceduralTasks:
    """Seeded procedural classification tasks (see the module docstring for the families).

    Args (keyword-only):
        families: subset of :data:`FAMILIES` to draw from.
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
        """``n`` fixed tasks of ``split``: seeds 0, 1, ... cycling through the families."""
        check_split(split)
        n = self.n_tasks_per_split if n is None else n
        if n is None or n < 0:
            raise ValueError(f"n must be a non-negative int (or set n_tasks_per_split), got {n}")
        k = len(self.families)
        return [self.task(self.families[i % k], i // k, split) for i in range(n)]

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
        img, class_names = _GENERATORS[family](rng, labels, n_classes, self.image_size)
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
