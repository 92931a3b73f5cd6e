"""Downsampled ImageNet (16x16, 32x32, 64x64; Chrabaszcz et al. 2017) from its pickle batches.

Expected files (each in ``data_dir`` or one of its ``Imagenet{S}_train``, ``Imagenet{S}_val``,
``Imagenet{S}_train_part1`` / ``_part2`` folders, as the official archives unpack)::

    train_data_batch_1 .. train_data_batch_10, val_data       (or the same names + ".npz")

Each holds ``data`` (N, 3*S*S) uint8 planar RGB, ``labels`` (1-based, 1..1000) and ``mean``.
Tasks are class subsets (``n_classes=10`` by default, as BASE meta-trains); held-out splits use
*disjoint class sets* (a fixed seeded partition of the classes present, ``class_split``
fractions), with every example of a class (train and val files) in its split; pass
``holdout="examples"`` to split by examples instead (val = ``val_data``). ``train_batches``
loads a subset of the ten batches (the full 64x64 train set is ~12 GB).

Usage::

    dist = get_task_distribution("imagenet_ds", data_dir="~/Imagenet32", resolution=32)
    task = dist.sample("test", np.random.default_rng(0))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._disk import DataError, check_labels, check_rows, expect_files, get_key, read_npz, read_pickle
from ._subset import ClassSubsetSource, Loaded, Pool
from .base import register_task_distribution

RESOLUTIONS = (16, 32, 64)
N_CLASSES = 1000


@register_task_distribution("imagenet_ds")
class ImageNetDSTasks(ClassSubsetSource):
    """Class-subset tasks over downsampled ImageNet.

    Keyword-only options: ``resolution`` (16, 32, 64 or None to infer from the files),
    ``train_batches`` (batch numbers to load, default 1..10), and those of
    :class:`ClassSubsetSource` (``data_dir``, ``image_size``, ``n_classes``, ``n_support``,
    ``n_query``, ``channels``, ``holdout``, ``class_split``, ``seed``).
    """

    name = "imagenet_ds"
    mean, std = (0.4811, 0.4575, 0.4079), (0.2605, 0.2533, 0.2683)
    default_holdout = "classes"

    def __init__(self, *, resolution: int | None = None,
                 train_batches: Sequence[int] = tuple(range(1, 11)), n_classes: int | None = 10,
                 **options: Any) -> None:
        if resolution is not None and resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS} or None, got "
                             f"{resolution!r}")
        batches = tuple(train_batches)
        if not batches or any(not isinstance(b, int) or not 1 <= b <= 10 for b in batches):
            raise ValueError(f"train_batches must be numbers in 1..10, got {train_batches!r}")
        super().__init__(n_classes=n_classes, **options)
        self.resolution, self.train_batches = resolution, batches
        d = self._require_dir()
        sizes = RESOLUTIONS if resolution is None else (resolution,)
        dirs = [d] + [d / f"Imagenet{s}_{part}" for s in sizes
                      for part in ("train", "val", "train_part1", "train_part2")]
        self._names = [f"train_data_batch_{b}" for b in batches] + ["val_data"]
        self._files = expect_files(self.name, dirs, [(n, n + ".npz") for n in self._names])

    def _read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        path = self._files[name]
        d = read_npz(path) if path.suffix == ".npz" else read_pickle(path)
        data = np.asarray(get_key(d, "data", path))
        labels = np.asarray(get_key(d, "labels", path))
        side = int(round((data.shape[-1] / 3) ** 0.5)) if data.ndim == 2 else 0
        if data.dtype != np.uint8 or data.ndim != 2 or 3 * side * side != data.shape[1]:
            raise DataError(f"{path}: 'data' must be uint8 [N, 3*S*S], got {data.dtype} "
                            f"{data.shape}")
        if side not in RESOLUTIONS or (self.resolution and side != self.resolution):
            want = self.resolution or RESOLUTIONS
            raise DataError(f"{path}: images are {side}x{side}, expected resolution {want}")
        check_rows(path, len(data), len(labels))
        y = check_labels(labels, 1, N_CLASSES, path) - 1  # the files are 1-based
        return data.reshape(-1, 3, side, side), y

    def _load(self) -> Loaded:
        parts = [self._read(n) for n in self._names]
        sides = {p[0].shape[-1] for p in parts}
        if len(sides) > 1:
            raise DataError(f"{self.name}: files mix resolutions {sorted(sides)}")
        y = np.concatenate([p[1] for p in parts])
        test = np.zeros(len(y), bool)
        test[len(y) - len(parts[-1][1]):] = True
        return Loaded(pool=Pool(y=y, x=np.concatenate([p[0] for p in parts])),
                      class_names=[f"class_{i + 1}" for i in range(N_CLASSES)], test_mask=test)
