"""Image generators of the procedural task families (used by :mod:`pyro_base.tasks.procedural`).

Every generator has the signature ``gen(rng, labels, n_classes, size) -> (img, class_names)``:
it draws from ``rng`` only, and returns unnormalised ``float64`` images ``[N, size, size, 3]``
(one per entry of ``labels``) and one readable name per class. See
:mod:`pyro_base.tasks.procedural` for what each family tests; :class:`ProceduralTasks`
normalises the images and wraps them in a :class:`~pyro_base.tasks.base.Task`.

Usage::

    import numpy as np
    from pyro_base.tasks.procedural_families import GENERATORS
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(40) % 4)
    img, class_names = GENERATORS["relation"](rng, labels, 4, 16)   # img: [40, 16, 16, 3]
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations, product

import numpy as np

__all__ = [
    "GENERATORS",
    "ImageGenerator",
    "PALETTE",
    "gen_colour",
    "gen_cooccurrence",
    "gen_dilated_motif",
    "gen_motif",
    "gen_relation",
]

ImageGenerator = Callable[[np.random.Generator, np.ndarray, int, int], tuple[np.ndarray, list[str]]]

PALETTE = (
    ("red", (1.0, 0.1, 0.1)), ("green", (0.1, 0.9, 0.1)), ("blue", (0.15, 0.3, 1.0)),
    ("yellow", (1.0, 0.9, 0.1)), ("magenta", (0.9, 0.1, 0.9)), ("cyan", (0.1, 0.9, 0.9)),
    ("orange", (1.0, 0.5, 0.0)), ("white", (0.95, 0.95, 0.95)),
)
_NOISE = 0.04


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
    rng: np.random.Generator,
    labels: np.ndarray,
    n_classes: int,
    size: int,
    dilation: int,
    clutter: float = 0.3,
) -> tuple[np.ndarray, list[str]]:
    """Stamp each image's class motif a few times, dilated by ``dilation``."""
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


def gen_motif(
    rng: np.random.Generator, labels: np.ndarray, n_classes: int, size: int
) -> tuple[np.ndarray, list[str]]:
    """``motif`` family: 3x3 class motifs stamped in random colours."""
    return _stamp_motifs(rng, labels, n_classes, size, dilation=1)


def gen_dilated_motif(
    rng: np.random.Generator, labels: np.ndarray, n_classes: int, size: int
) -> tuple[np.ndarray, list[str]]:
    """``dilated_motif`` family: the motifs dilated by 2, with clutter between the dots."""
    return _stamp_motifs(rng, labels, n_classes, size, dilation=2)


def gen_relation(
    rng: np.random.Generator,
    labels: np.ndarray,
    n_classes: int,
    size: int,
    marker: int = 2,
    n_distract: int = 3,
) -> tuple[np.ndarray, list[str]]:
    """``relation`` family: the class is the angle bin between two coloured markers."""
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


def gen_cooccurrence(
    rng: np.random.Generator, labels: np.ndarray, n_classes: int, size: int
) -> tuple[np.ndarray, list[str]]:
    """``cooccurrence`` family: the class is which pair of palette colours touches."""
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


def gen_colour(
    rng: np.random.Generator, labels: np.ndarray, n_classes: int, size: int
) -> tuple[np.ndarray, list[str]]:
    """``colour`` family: the class is the mean colour, under noise and random blobs."""
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


GENERATORS: dict[str, ImageGenerator] = {
    "motif": gen_motif,
    "dilated_motif": gen_dilated_motif,
    "relation": gen_relation,
    "cooccurrence": gen_cooccurrence,
    "colour": gen_colour,
}
