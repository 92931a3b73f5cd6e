"""Bring your own data: an image folder (one subfolder per class) or an ``.npz`` file.

``folder``: ``data_dir/<class name>/<image>`` with any PIL-readable image (png, jpg, bmp, gif,
ppm, pgm, tif, webp); greyscale if the first image is, else RGB; images of different sizes need
``image_size``. ``npz``: ``path`` to an ``.npz`` with ``x`` (N, H, W) or (N, H, W, C) (uint8, or
float in [0, 1]), integer ``y`` in ``[0, K)`` and optionally ``class_names`` (K strings).

Each class's examples are split once into a fixed train / test part (``test_fraction``, by
``default_rng([seed, 3])``). Held-out splits are disjoint by *examples* by default (``train`` =
train part minus ``val_fraction``, ``val`` = that fraction, ``test`` = the test part); pass
``holdout="classes"`` for disjoint class sets (``class_split``). Normalisation uses ``mean`` /
``std`` when given, else per-channel statistics of up to 512 training images.

Usage::

    dist = get_task_distribution("folder", data_dir="~/flowers", image_size=32, n_classes=5)
    task = dist.sample("train", np.random.default_rng(0))
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._disk import (
    DataError,
    MissingDataError,
    check_labels,
    check_rows,
    expect_files,
    images_to_tensor,
    read_npz,
)
from ._subset import ClassSubsetSource, Loaded, Pool
from .base import register_task_distribution

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                  ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class _UserData(ClassSubsetSource):
    """Adds the fixed per-class train/test split and data-derived normalisation."""

    def __init__(self, *, test_fraction: float = 0.2, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, **options: Any) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together")
        if std is not None and min(std) <= 0:
            raise ValueError(f"std must be positive, got {std!r}")
        super().__init__(**options)
        self.test_fraction = test_fraction
        self._stats = None if mean is None else (tuple(mean), tuple(std))  # type: ignore[arg-type]

    @abstractmethod
    def _read(self) -> tuple[Pool, list[str]]:
        """All examples and the class names."""

    def _load(self) -> Loaded:
        pool, names = self._read()
        rng = np.random.default_rng([self.seed, 3])
        test = np.zeros(len(pool.y), bool)
        for c in np.unique(pool.y):
            idx = rng.permutation(np.flatnonzero(pool.y == c))
            n_test = min(len(idx) - 1, max(1, int(round(self.test_fraction * len(idx)))))
            test[idx[:n_test]] = True
        if self._stats is None:
            train = np.flatnonzero(~test)
            sub = np.sort(rng.permutation(train)[:512])
            x = images_to_tensor(pool.take(sub), mean=(0.0,), std=(1.0,),
                                 image_size=self.image_size, channels=None)
            self._stats = (tuple(x.mean((0, 2, 3)).tolist()),
                           tuple(x.std((0, 2, 3)).clamp_min(1e-3).tolist()))
        self.mean, self.std = self._stats
        return Loaded(pool=pool, class_names=names, test_mask=test)


@register_task_distribution("folder")
class FolderTasks(_UserData):
    """Class-subset tasks over ``data_dir/<class>/<image>``.

    Keyword-only options: ``data_dir``, ``test_fraction``, ``mean``, ``std`` and those of
    :class:`ClassSubsetSource` (``image_size``, ``n_classes``, ``n_support``, ``n_query``,
    ``channels``, ``holdout``, ``val_fraction``, ``class_split``, ``seed``).
    """

    name = "folder"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._require_dir()

    def _read(self) -> tuple[Pool, list[str]]:
        from PIL import Image

        root = self._require_dir()
        classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                 for c in classes]
        kept = [(c.name, fs) for c, fs in zip(classes, files, strict=True) if fs]
        if len(kept) < 2:
            raise MissingDataError(
                f"folder: expected at least 2 class subfolders with images "
                f"({', '.join(IMAGE_SUFFIXES)}) in {root}, found {len(kept)}: "
                f"{[n for n, _ in kept]}")
        paths = [f for _, fs in kept for f in fs]
        y = np.concatenate([np.full(len(fs), c, np.int64) for c, (_, fs) in enumerate(kept)])
        try:
            with Image.open(paths[0]) as im:
                mode = "L" if im.mode in GREY_MODES else "RGB"
        except OSError as e:
            raise DataError(f"{paths[0]}: cannot read image ({e})") from e
        return Pool(y=y, paths=paths, pil_mode=mode), [n for n, _ in kept]


@register_task_distribution("npz")
class NpzTasks(_UserData):
    """Class-subset tasks over an ``.npz`` with ``x`` and ``y`` (``path``: the file, or a
    directory holding ``data.npz``). Other options as :class:`FolderTasks`."""

    name = "npz"

    def __init__(self, *, path: str | Path | None = None, **options: Any) -> None:
        if path is None:
            raise ValueError("npz: path (the .npz file) is required")
        p = Path(path).expanduser()
        super().__init__(data_dir=p if p.is_dir() else p.parent, **options)
        self._file = expect_files(self.name, [self._require_dir()],
                                  ["data.npz" if p.is_dir() else p.name])

    def _read(self) -> tuple[Pool, list[str]]:
        path = next(iter(self._file.values()))
        z = read_npz(path)
        for key in ("x", "y"):
            if key not in z:
                raise DataError(f"{path}: missing array {key!r}; arrays present: {sorted(z)}")
        x, y = z["x"], z["y"]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape[1:3], default=0) < 1:
            raise DataError(f"{path}: x must be (N, H, W) or (N, H, W, C) with H, W >= 1 and C "
                            f"in (1, 3), got {x.shape}")
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{path}: x must be uint8 or float, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{path}: y must be a 1-d integer array, got {y.dtype} {y.shape}")
        check_rows(path, len(x), len(y))
        names = [str(n) for n in z["class_names"]] if "class_names" in z else None
        hi = len(names) - 1 if names else max(int(y.max(initial=0)), 1)
        y = check_labels(y, 0, hi, path)
        names = names or [str(i) for i in range(hi + 1)]
        x = x.transpose(0, 3, 1, 2)
        return Pool(y=y, x=x if x.dtype == np.uint8 else x.astype(np.float32)), names
