"""CIFAR-10 and CIFAR-100 from the python pickle batches, with plain pickle and no md5 check.

Expected files (in ``data_dir`` or its ``cifar-10-batches-py`` / ``cifar-100-python`` folder)::

    cifar10:  data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar100: train, test, meta                     (fine labels)

Keys may be bytes (the original files) or str. Held-out splits: CIFAR-10 is split by
*examples* by default (``train`` = the data batches minus a fixed ``val_fraction`` per class,
``val`` = that fraction, ``test`` = ``test_batch``); CIFAR-100 by *classes* (a fixed seeded
60/20/20 partition of the 100 fine classes, set by ``class_split``). Either accepts
``holdout=``. ``whole_task()`` gives the standard benchmark (support = train, query = test).

Usage::

    dist = get_task_distribution("cifar100", data_dir="~/data", n_classes=10, image_size=16)
    task = dist.sample("val", np.random.default_rng(0))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._disk import DataError, check_labels, check_rows, expect_files, get_key, read_pickle
from ._subset import ClassSubsetSource, Loaded, Pool
from .base import register_task_distribution


def _decode(names: list[object]) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


class _CifarBase(ClassSubsetSource):
    """Shared loader; subclasses set the file names, label key and class count."""

    folder = ""
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    meta_file = ""
    label_key = ""
    names_key = ""
    total_classes = 0

    def __init__(self, *, data_dir: str | Path | None = None, **options: object) -> None:
        super().__init__(data_dir=data_dir, **options)  # type: ignore[arg-type]
        d = self._require_dir()
        names = [*self.train_files, *self.test_files, self.meta_file]
        self._files = expect_files(self.name, [d, d / self.folder], names)

    def _read_batch(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        path = self._files[name]
        batch = read_pickle(path)
        data = np.asarray(get_key(batch, "data", path))
        labels = np.asarray(get_key(batch, self.label_key, path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} "
                            f"{data.shape}")
        check_rows(path, len(data), len(labels))
        y = check_labels(labels, 0, self.total_classes - 1, path)
        return data.reshape(-1, 3, 32, 32), y

    def _load(self) -> Loaded:
        parts = [self._read_batch(f) for f in (*self.train_files, *self.test_files)]
        n_train = sum(len(y) for _, y in parts[: len(self.train_files)])
        y = np.concatenate([p[1] for p in parts])
        meta_path = self._files[self.meta_file]
        names = _decode(list(get_key(read_pickle(meta_path), self.names_key, meta_path)))
        if len(names) != self.total_classes:
            raise DataError(f"{meta_path}: {len(names)} class names, expected "
                            f"{self.total_classes}")
        return Loaded(pool=Pool(y=y, x=np.concatenate([p[0] for p in parts])),
                      class_names=names, test_mask=np.arange(len(y)) >= n_train)


@register_task_distribution("cifar10")
class CIFAR10Tasks(_CifarBase):
    """CIFAR-10 tasks. Keyword-only options: those of :class:`ClassSubsetSource`."""

    name = "cifar10"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    label_key, names_key, total_classes = "labels", "label_names", 10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@register_task_distribution("cifar100")
class CIFAR100Tasks(_CifarBase):
    """CIFAR-100 tasks over the 100 fine labels; held out by classes by default."""

    name = "cifar100"
    folder = "cifar-100-python"
    train_files, test_files, meta_file = ("train",), ("test",), "meta"
    label_key, names_key, total_classes = "fine_labels", "fine_label_names", 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    default_holdout = "classes"
