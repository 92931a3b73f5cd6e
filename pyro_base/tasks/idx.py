"""MNIST, Fashion-MNIST and KMNIST from their idx files (gzip or not), parsed with numpy.

Expected files (in ``data_dir``, ``data_dir/raw`` or torchvision's ``data_dir/<Name>/raw``)::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Fashion-MNIST defaults to ``/usr/share/datasets/fashion-mnist/`` (Debian package
``dataset-fashion-mnist``) when that directory exists. Held-out splits are disjoint by
*examples* by default (10 classes are too few to split): ``train`` = train file minus a fixed
``val_fraction`` per class, ``val`` = that fraction, ``test`` = the t10k file; pass
``holdout="classes"`` for disjoint class sets instead. ``whole_task()`` is the standard
benchmark (support = train file, query = t10k file).

Usage::

    dist = get_task_distribution("fashion_mnist", image_size=16, channels=3, n_classes=5)
    task = dist.sample("train", np.random.default_rng(0))
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from ._disk import DataError, check_labels, check_rows, expect_files
from ._subset import ClassSubsetSource, Loaded, Pool
from .base import register_task_distribution

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
VARIANTS: dict[str, dict[str, Any]] = {
    "mnist": {"torchvision": "MNIST", "mean": 0.1307, "std": 0.3081,
              "classes": [str(i) for i in range(10)]},
    "fashion_mnist": {"torchvision": "FashionMNIST", "mean": 0.2860, "std": 0.3530,
                      "default_dir": "/usr/share/datasets/fashion-mnist",
                      "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]},
    "kmnist": {"torchvision": "KMNIST", "mean": 0.1918, "std": 0.3483,
               "classes": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]},
}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (gzip detected from its magic bytes); errors name the file."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path}: bad idx magic number {raw[:4].hex() or '(empty)'}; expected "
                        "00 00 <type 08..0e> <ndim>")
    ndim, dtype = raw[3], np.dtype(IDX_DTYPES[raw[2]])
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    body = len(raw) - 4 - 4 * ndim
    if body != n_bytes:
        raise DataError(f"{path}: idx header says shape {shape} ({n_bytes} bytes) but the file "
                        f"holds {body} bytes")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


@register_task_distribution("idx")
class IdxTasks(ClassSubsetSource):
    """Class-subset tasks over MNIST-style idx files; ``variant`` picks names and mean/std.

    Constructor (keyword-only): ``variant`` ("mnist", "fashion_mnist", "kmnist"), ``data_dir``,
    ``image_size``, ``channels``, ``n_classes``, ``n_support``, ``n_query``, ``holdout``,
    ``val_fraction``, ``class_split``, ``seed`` (see :class:`ClassSubsetSource`).
    """

    default_variant = "mnist"

    def __init__(self, *, variant: str | None = None, data_dir: str | Path | None = None,
                 **options: Any) -> None:
        variant = self.default_variant if variant is None else variant
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        spec = VARIANTS[variant]
        if data_dir is None and "default_dir" in spec:
            if not Path(spec["default_dir"]).is_dir():
                raise ValueError(f"{variant}: data_dir is required (nothing is downloaded): "
                                 f"pass --data-dir DIR holding the idx files "
                                 f"({', '.join(FILES)}, optionally .gz); the default "
                                 f"{spec['default_dir']} (Debian's dataset-fashion-mnist) "
                                 "is absent")
            data_dir = spec["default_dir"]
        super().__init__(data_dir=data_dir, **options)
        self.variant, self.name = variant, variant
        self.mean, self.std = (spec["mean"],), (spec["std"],)
        d = self._require_dir()
        self._dirs = [d, d / "raw", d / spec["torchvision"] / "raw"]
        self._files = expect_files(variant, self._dirs, [(f + ".gz", f) for f in FILES])

    def _load(self) -> Loaded:
        arrays = []
        for prefix in ("train", "t10k"):
            ip, lp = (self._files[f"{prefix}-{k}.gz"] for k in ("images-idx3-ubyte",
                                                                "labels-idx1-ubyte"))
            x, y = read_idx(ip), read_idx(lp)
            if x.ndim != 3 or x.dtype != np.uint8:
                raise DataError(f"{ip}: expected uint8 images [N, H, W], got {x.dtype} {x.shape}")
            check_rows(f"{ip} / {lp}", len(x), len(y))
            arrays.append((x[:, None], check_labels(y, 0, 9, lp)))
        (xtr, ytr), (xte, yte) = arrays
        if xtr.shape[1:] != xte.shape[1:]:
            raise DataError(f"{self.name}: train images {xtr.shape[1:]} and t10k images "
                            f"{xte.shape[1:]} differ in size")
        mask = np.r_[np.zeros(len(ytr), bool), np.ones(len(yte), bool)]
        return Loaded(pool=Pool(y=np.r_[ytr, yte], x=np.concatenate([xtr, xte])),
                      class_names=list(VARIANTS[self.variant]["classes"]), test_mask=mask)


@register_task_distribution("mnist")
class MNISTTasks(IdxTasks):
    default_variant = "mnist"


@register_task_distribution("fashion_mnist")
class FashionMNISTTasks(IdxTasks):
    default_variant = "fashion_mnist"


@register_task_distribution("kmnist")
class KMNISTTasks(IdxTasks):
    default_variant = "kmnist"
