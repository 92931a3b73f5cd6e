"""N-way K-shot episodes over Omniglot and Mini-ImageNet, with the standard class splits.

An episode is a :class:`Task` with ``n_classes`` (N) classes, ``n_support`` (K) support and
``n_query`` (Q) query images per class: support = N*K, query = N*Q. Held-out splits use
*disjoint classes*.

Omniglot (torchvision's folder layout, no zip md5 check), in ``data_dir`` or
``data_dir/omniglot-py``::

    images_background/<alphabet>/<character>/<id>_<drawer>.png
    images_evaluation/<alphabet>/<character>/<id>_<drawer>.png

Split: ``test`` = every evaluation character (659); the background characters (964) are split
into ``train`` / ``val`` by a fixed permutation (``default_rng([seed, 2])``) with
``val_fraction`` (0.2) of them in ``val``. With ``rotations=True`` (default, the usual practice)
each character rotated by 0/90/180/270 degrees is a class of its own, in its character's split.

Mini-ImageNet (Ravi & Larochelle split), in ``data_dir`` or ``data_dir/mini-imagenet``, either
``train.csv``, ``val.csv``, ``test.csv`` (columns ``filename,label``) plus ``images/<filename>``,
or the pickle caches ``mini-imagenet-cache-{train,val,test}.pkl`` holding
``{"image_data": uint8 [N, 84, 84, 3], "class_dict": {class: [indices]}}``.

Usage::

    dist = get_task_distribution("omniglot", data_dir="~/data", image_size=28, n_support=1)
    episode = dist.sample("test", np.random.default_rng(0))   # 5-way 1-shot, 15 queries
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ._disk import DataError, MissingDataError, expect_files, get_key, read_pickle
from ._subset import ClassSubsetSource, Loaded, Pool
from .base import SPLITS, register_task_distribution


class _Episodes(ClassSubsetSource):
    """Few-shot base: fixed class splits from the loader; episode defaults 5-way 1-shot 15-query."""

    default_holdout = "classes"

    def __init__(self, *, data_dir: str | Path | None = None, image_size: int | None = None,
                 n_classes: int = 5, n_support: int = 1, n_query: int = 15,
                 channels: int | None = None, seed: int = 0, **extra: Any) -> None:
        super().__init__(data_dir=data_dir, image_size=image_size, n_classes=n_classes,
                         n_support=n_support, n_query=n_query, channels=channels, seed=seed,
                         holdout="classes", **extra)
        if n_classes is None:
            raise ValueError("n_classes must be an int for episodes")


@register_task_distribution("omniglot")
class OmniglotEpisodes(_Episodes):
    """Omniglot episodes. Extra keyword-only options: ``rotations`` (bool), ``val_fraction``."""

    name = "omniglot"
    mean, std = (0.9221,), (0.2681,)

    def __init__(self, *, rotations: bool = True, val_fraction: float = 0.2,
                 **options: Any) -> None:
        super().__init__(val_fraction=val_fraction, **options)
        self.n_rotations = 4 if rotations else 1
        d = self._require_dir()
        self._roots = expect_files(self.name, [d, d / "omniglot-py"],
                                   ["images_background", "images_evaluation"],
                                   hint="Each holds <alphabet>/<character>/<id>_<drawer>.png.")

    def _characters(self, root: Path) -> list[tuple[str, list[Path]]]:
        chars = [(f"{a.name}/{c.name}", sorted(c.glob("*.png")))
                 for a in sorted(p for p in root.iterdir() if p.is_dir())
                 for c in sorted(p for p in a.iterdir() if p.is_dir())]
        chars = [(n, ps) for n, ps in chars if ps]
        if not chars:
            raise DataError(f"{root}: no <alphabet>/<character>/*.png images found")
        return chars

    def _load(self) -> Loaded:
        bg = self._characters(self._roots["images_background"])
        ev = self._characters(self._roots["images_evaluation"])
        names, paths, ys = [], [], []
        for c, (name, ps) in enumerate(bg + ev):
            names.append(name)
            paths.extend(ps)
            ys.extend([c] * len(ps))
        perm = np.random.default_rng([self.seed, 2]).permutation(len(bg))
        n_val = max(1, int(round(self.val_fraction * len(bg))))
        splits = {"train": np.sort(perm[n_val:]), "val": np.sort(perm[:n_val]),
                  "test": np.arange(len(bg), len(bg) + len(ev))}
        return Loaded(pool=Pool(y=np.asarray(ys, np.int64), paths=paths, pil_mode="L"),
                      class_names=names, class_splits=splits)


@register_task_distribution("mini_imagenet")
class MiniImageNetEpisodes(_Episodes):
    """Mini-ImageNet episodes from CSV + images or the pickle caches; images are 84x84 by default
    (``image_size=84``: the CSV release's images vary in size)."""

    name = "mini_imagenet"
    mean, std = (0.4721, 0.4533, 0.4100), (0.2771, 0.2677, 0.2844)

    def __init__(self, *, image_size: int | None = 84, **options: Any) -> None:
        super().__init__(image_size=image_size, **options)
        d = self._require_dir()
        dirs = [d, d / "mini-imagenet"]
        try:
            self._files = expect_files(self.name, dirs, [f"{s}.csv" for s in SPLITS] + ["images"])
            self._format = "csv"
        except MissingDataError as csv_err:
            try:
                self._files = expect_files(
                    self.name, dirs, [f"mini-imagenet-cache-{s}.pkl" for s in SPLITS])
                self._format = "pickle"
            except MissingDataError as pkl_err:
                raise MissingDataError(f"{csv_err}\nOr, the pickle caches: {pkl_err}") from None

    def _read_csv(self, split: str) -> list[tuple[str, str]]:
        path = self._files[f"{split}.csv"]
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or [h.strip() for h in rows[0][:2]] != ["filename", "label"]:
            raise DataError(f"{path}: expected a header 'filename,label', got {rows[:1]}")
        bad = [i + 2 for i, r in enumerate(rows[1:]) if len(r) != 2]
        if bad:
            raise DataError(f"{path}: rows {bad[:5]} do not have 2 columns")
        return [(r[0], r[1]) for r in rows[1:]]

    def _load(self) -> Loaded:
        names: list[str] = []
        ys: list[np.ndarray] = []
        xs: list[np.ndarray] = []
        paths: list[Path] = []
        splits: dict[str, np.ndarray] = {}
        for split in SPLITS:
            if self._format == "csv":
                rows = self._read_csv(split)
                labels = sorted({lab for _, lab in rows})
                lookup = {lab: len(names) + i for i, lab in enumerate(labels)}
                paths.extend(self._files["images"] / fn for fn, _ in rows)
                y = np.array([lookup[lab] for _, lab in rows], np.int64)
            else:
                labels, x, y = self._read_cache(split, len(names))
                xs.append(x)
            dup = set(labels) & set(names)
            if dup:
                raise DataError(f"{self.name}: classes {sorted(dup)[:5]} appear in two splits")
            splits[split] = np.arange(len(names), len(names) + len(labels))
            names.extend(labels)
            ys.append(y)
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingDataError(f"{self.name}: {len(missing)} image(s) listed in the CSVs are "
                                   f"missing, e.g. {[str(p) for p in missing[:3]]}")
        pool = (Pool(y=np.concatenate(ys), paths=paths, pil_mode="RGB") if paths
                else Pool(y=np.concatenate(ys), x=np.concatenate(xs)))
        return Loaded(pool=pool, class_names=names, class_splits=splits)

    def _read_cache(self, split: str, offset: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        path = self._files[f"mini-imagenet-cache-{split}.pkl"]
        cache = read_pickle(path)
        x = np.asarray(get_key(cache, "image_data", path))
        class_dict = get_key(cache, "class_dict", path)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise DataError(f"{path}: image_data must be uint8 [N, H, W, 3], got {x.dtype} "
                            f"{x.shape}")
        labels = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in class_dict)
        y = np.full(len(x), -1, np.int64)
        for k, idx in class_dict.items():
            idx = np.asarray(idx, np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= len(x)):
                raise DataError(f"{path}: class_dict indices out of range [0, {len(x)})")
            y[idx] = offset + labels.index(k.decode() if isinstance(k, bytes) else str(k))
        return labels, x.transpose(0, 3, 1, 2), y
