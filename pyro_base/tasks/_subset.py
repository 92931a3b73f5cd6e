"""Class-subset tasks and held-out splits shared by every on-disk source.

Every on-disk loader subclasses :class:`ClassSubsetSource` and implements one hook,
``_load() -> Loaded``: all examples in one :class:`Pool` (uint8 or float NCHW array, or a list of
image paths decoded on demand), integer class ids, and which examples come from the official
test file. The base class turns that into ``train`` / ``val`` / ``test`` splits that are disjoint
either by *examples* (``holdout="examples"``: train file minus a fixed ``val_fraction`` per
class / that fraction / the test file) or by *classes* (``holdout="classes"``: a fixed seeded
partition of the classes by ``class_split``; or an explicit partition given by the loader), and
samples class-subset tasks: ``n_classes`` classes, ``n_support`` + ``n_query`` examples each.

Usage (inside a loader)::

    class MySource(ClassSubsetSource):
        name = "mine"
        mean, std = (0.5,), (0.25,)

        def _load(self) -> Loaded:
            files = expect_files("mine", [self.data_dir], ["a.npy"])
            ...
            return Loaded(pool=Pool(y=y, x=x), test_mask=mask, class_names=names)

Nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._disk import DataError, MissingDataError, images_to_tensor
from .base import SPLITS, Task, check_split

log = logging.getLogger(__name__)

HOLDOUTS = ("examples", "classes")


@dataclass
class Pool:
    """All examples of a source: ``y`` class ids and either an NCHW array ``x`` or image paths."""

    y: np.ndarray
    x: np.ndarray | None = None
    paths: Sequence[Path] | None = None
    pil_mode: str = "L"

    def take(self, idx: np.ndarray) -> np.ndarray | list[np.ndarray]:
        if self.x is not None:
            return self.x[idx]
        from PIL import Image

        out = []
        for i in idx:
            p = self.paths[int(i)]  # type: ignore[index]
            try:
                with Image.open(p) as im:
                    a = np.asarray(im.convert(self.pil_mode), dtype=np.uint8)
            except OSError as e:
                raise DataError(f"{p}: cannot read image ({e})") from e
            out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        return out


@dataclass
class Loaded:
    """What a loader's ``_load`` returns.

    ``test_mask`` marks examples of the official test file (None: there is none).
    ``class_splits`` fixes the class partition per split (few-shot sources).
    """

    pool: Pool
    class_names: list[str]
    test_mask: np.ndarray | None = None
    class_splits: dict[str, np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _positive(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")


class ClassSubsetSource(ABC):
    """Base class of the on-disk task distributions (see the module docstring).

    Tasks: ``n_classes`` classes (None: all classes of the split) drawn by ``rng`` from the
    split's classes, labels ``0..n_classes-1`` in drawn order; per class ``n_support`` support and
    ``n_query`` query examples (``n_support=None``: every remaining example of the class).
    """

    name = "disk"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    default_holdout = "examples"
    n_rotations = 1

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        image_size: int | None = None,
        n_classes: int | None = 5,
        n_support: int | None = 10,
        n_query: int = 10,
        channels: int | None = None,
        holdout: str | None = None,
        val_fraction: float = 0.1,
        class_split: tuple[float, float, float] = (0.6, 0.2, 0.2),
        seed: int = 0,
    ) -> None:
        _positive("image_size", image_size, allow_none=True)
        _positive("n_classes", n_classes, allow_none=True)
        if n_classes == 1:
            raise ValueError("n_classes must be >= 2 (or None for all classes)")
        _positive("n_support", n_support, allow_none=True)
        _positive("n_query", n_query)
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        holdout = self.default_holdout if holdout is None else holdout
        if holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
        if len(class_split) != 3 or min(class_split) <= 0:
            raise ValueError(f"class_split must be 3 positive fractions, got {class_split!r}")
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self.image_size, self.channels = image_size, channels
        self.n_classes, self.n_support, self.n_query = n_classes, n_support, n_query
        self.holdout, self.val_fraction, self.seed = holdout, val_fraction, int(seed)
        self.class_split = tuple(float(f) for f in class_split)
        self._data: Loaded | None = None
        self._splits: dict[str, dict[int, np.ndarray]] | None = None

    def _require_dir(self) -> Path:
        if self.data_dir is None:
            raise ValueError(f"{self.name}: data_dir is required (nothing is downloaded)")
        if not self.data_dir.is_dir():
            raise MissingDataError(f"{self.name}: data_dir {self.data_dir} is not a directory")
        return self.data_dir

    # ---- hook -------------------------------------------------------------------------------
    @abstractmethod
    def _load(self) -> Loaded:
        """Read the source's files (called once, lazily)."""

    # ---- splits -----------------------------------------------------------------------------
    @property
    def data(self) -> Loaded:
        if self._data is None:
            self._data = self._load()
            log.info("%s: loaded %d examples, %d classes", self.name,
                     len(self._data.pool.y), len(self._data.class_names))
        return self._data

    def splits(self) -> dict[str, dict[int, np.ndarray]]:
        """``{split: {class id: example indices}}``; class ids include rotations."""
        if self._splits is None:
            self._splits = self._make_splits(self.data)
        return self._splits

    def _make_splits(self, data: Loaded) -> dict[str, dict[int, np.ndarray]]:
        y, rot = data.pool.y, self.n_rotations
        by_class = {int(c): np.flatnonzero(y == c) for c in np.unique(y)}
        if data.class_splits is not None or self.holdout == "classes":
            parts = data.class_splits or self._partition(np.array(sorted(by_class)))
            return {s: {int(c) * rot + k: by_class[int(c)] for c in parts[s] for k in range(rot)}
                    for s in SPLITS}
        if data.test_mask is None:
            raise DataError(f"{self.name}: holdout='examples' needs a test file")
        rng = np.random.default_rng([self.seed, 1])
        out: dict[str, dict[int, np.ndarray]] = {s: {} for s in SPLITS}
        for c, idx in by_class.items():
            train = idx[~data.test_mask[idx]]
            n_val = min(len(train) - 1, max(1, int(round(self.val_fraction * len(train)))))
            perm = rng.permutation(train)
            out["val"][c], out["train"][c] = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            out["test"][c] = idx[data.test_mask[idx]]
        return {s: {c: i for c, i in d.items() if len(i)} for s, d in out.items()}

    def _partition(self, classes: np.ndarray) -> dict[str, np.ndarray]:
        perm = np.random.default_rng([self.seed, 0]).permutation(classes)
        frac = np.asarray(self.class_split) / sum(self.class_split)
        cuts = np.round(np.cumsum(frac)[:2] * len(perm)).astype(int)
        parts = np.split(perm, cuts)
        if min(len(p) for p in parts) == 0:
            raise DataError(f"{self.name}: {len(classes)} classes cannot be split by class_split="
                            f"{self.class_split}; use holdout='examples'")
        return {s: np.sort(p) for s, p in zip(SPLITS, parts, strict=True)}

    # ---- tasks ------------------------------------------------------------------------------
    def _class_name(self, c: int) -> str:
        base, k = divmod(c, self.n_rotations)
        name = self.data.class_names[base]
        return f"{name}@rot{90 * k}" if self.n_rotations > 1 else name

    def _images(self, idx: np.ndarray, c: int) -> torch.Tensor:
        imgs = self.data.pool.take(idx)
        k = c % self.n_rotations
        if k:
            imgs = (np.rot90(imgs, k, axes=(-2, -1)) if isinstance(imgs, np.ndarray)
                    else [np.rot90(a, k, axes=(-2, -1)) for a in imgs])
        return images_to_tensor(imgs, mean=self.mean, std=self.std,
                                image_size=self.image_size, channels=self.channels)

    def _build(self, split: str, parts: list[tuple[int, np.ndarray, np.ndarray]],
               extra: dict[str, Any]) -> Task:
        xs, ys, xq, yq = [], [], [], []
        for label, (c, s_idx, q_idx) in enumerate(parts):
            for idx, xo, yo in ((s_idx, xs, ys), (q_idx, xq, yq)):
                xo.append(self._images(idx, c))
                yo.append(torch.full((len(idx),), label, dtype=torch.int64))
        classes = [c for c, _, _ in parts]
        return Task(
            name=f"{self.name}/{split}", n_classes=len(parts),
            support=(torch.cat(xs), torch.cat(ys)), query=(torch.cat(xq), torch.cat(yq)),
            metadata={"family": self.name, "split": split, "classes": classes,
                      "class_names": [self._class_name(c) for c in classes], **extra},
        )

    def sample(self, split: str, rng: np.random.Generator) -> Task:
        """A class-subset task of ``split``; a pure function of ``rng``'s state."""
        pool = self.splits()[check_split(split)]
        classes = np.array(sorted(pool), dtype=np.int64)
        n_way = len(classes) if self.n_classes is None else self.n_classes
        if n_way > len(classes):
            raise DataError(f"{self.name}: split {split!r} has {len(classes)} classes; asked for "
                            f"n_classes={n_way}")
        chosen = classes if self.n_classes is None else rng.choice(classes, n_way, replace=False)
        counts = [len(pool[int(c)]) for c in chosen]
        need = (1 if self.n_support is None else self.n_support) + self.n_query
        if min(counts) < need:
            raise DataError(
                f"{self.name}: split {split!r} has classes with only {min(counts)} examples "
                f"(smallest class of the split: {min(len(v) for v in pool.values())}); asked for "
                f"n_support={self.n_support} + n_query={self.n_query} = {need} per class")
        parts = []
        for c, n in zip(chosen, counts, strict=True):
            pick = pool[int(c)][rng.permutation(n)]
            n_s = n - self.n_query if self.n_support is None else self.n_support
            parts.append((int(c), pick[:n_s], pick[n_s:n_s + self.n_query]))
        return self._build(split, parts, {})

    def split_classes(self) -> dict[str, list[str]]:
        """The class names of each split (disjoint with ``holdout="classes"``)."""
        return {s: [self._class_name(c) for c in sorted(pool)]
                for s, pool in self.splits().items()}

    def tasks(self, split: str, n: int) -> list[Task]:
        """A fixed list of ``n`` tasks: task ``i`` uses ``default_rng([seed, split, i])`` and is
        named ``<source>/<split>/<i>`` (distinct names: runs key files and posteriors by them)."""
        s = SPLITS.index(check_split(split))
        return [dataclasses.replace(self.sample(split, np.random.default_rng([self.seed, s, i])),
                                    name=f"{self.name}/{split}/{i}") for i in range(n)]

    def whole_task(self) -> Task:
        """The whole data set as one task: support = train file, query = test file."""
        data = self.data
        if data.test_mask is None or self.n_rotations != 1:
            raise DataError(f"{self.name}: has no official train/test files for a whole task")
        y = data.pool.y
        parts = [(int(c), np.flatnonzero((y == c) & ~data.test_mask),
                  np.flatnonzero((y == c) & data.test_mask)) for c in np.unique(y)]
        empty = [self._class_name(c) for c, s, q in parts if not (len(s) and len(q))]
        if empty:
            raise DataError(f"{self.name}: classes {empty} lack train or test examples")
        return self._build("whole", parts, {"whole": True})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(data_dir={str(self.data_dir)!r}, n_classes="
                f"{self.n_classes}, n_support={self.n_support}, n_query={self.n_query})")
