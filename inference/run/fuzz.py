"""Fuzzing the inputs users hand to pyro-base: only the project's own clean errors may come out.

Each generated case is one of:

* ``checkpoint``: a valid checkpoint's bytes truncated, overwritten at random places or
  replaced, read by :func:`~pyro_base.checkpoint.load_checkpoint`;
* ``npz``: an ``.npz`` data set with random shapes (zero-sized sides included), dtypes, labels
  and missing or extra arrays, read by the ``npz`` source and sampled as a task;
* ``folder``: an image folder with random class counts, image sizes and modes, and damaged
  image files, read by the ``folder`` source and sampled as a task;
* ``config``: a :class:`~pyro_base.inference.run.config.MetaConfig` with random field values
  of random types.

A case passes when it returns normally or raises one of :data:`CLEAN` (each names the file or
the field); anything else *escapes* and is reported with its type and message.

Usage::

    report = fuzz(n=10_000, seed=0, workdir="fuzz-tmp")
    report["escaped"], report["by_kind"]
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pyro_base.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_base.config import ConfigError
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.run_dir import RunDirError
from pyro_base.search_space import SearchSpace
from pyro_base.tasks import get_task_distribution
from pyro_base.tasks._disk import DataError

CLEAN = (ConfigError, DataError, CheckpointError, RunDirError)
KINDS = ("checkpoint", "npz", "folder", "config")
_DTYPES = (np.uint8, np.float32, np.float64, np.int64, np.int8, np.bool_, np.float16)
_VALUES: tuple[Any, ...] = (-1, 0, 1, 2, 7, 10**9, -0.5, 0.0, 0.3, 1e300, float("nan"),
                            float("inf"), "", "x", "cpu", None, True, [], [1], {"a": 1})


def _checkpoint_case(rng: np.random.Generator, d: Path, space: SearchSpace) -> None:
    path = d / "checkpoint.pt"
    save_checkpoint(path, {"W": {"mu": torch.zeros(3)}, "step": 1}, space=space)
    data = bytearray(path.read_bytes())
    how = rng.integers(3)
    if how == 0:
        data = data[: int(rng.integers(len(data)))]
    elif how == 1:
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    else:
        data = bytearray(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8))
    path.write_bytes(bytes(data))
    load_checkpoint(path, space=space)


def _sample(name: str, rng: np.random.Generator, **options: Any) -> None:
    dist = get_task_distribution(name, image_size=int(rng.choice([4, 8, 16])), n_classes=2,
                                 n_support=1, n_query=1, **options)
    dist.sample("train", rng)


def _npz_case(rng: np.random.Generator, d: Path, space: SearchSpace) -> None:
    n = int(rng.integers(0, 40))
    shape = [n, int(rng.integers(0, 13)), int(rng.integers(0, 13))]
    if rng.random() < 0.4:
        shape.append(int(rng.choice([0, 1, 2, 3, 4])))
    dtype = _DTYPES[int(rng.integers(len(_DTYPES)))]
    valid = rng.random() < 0.7  # mostly well-formed values, so deeper code runs too
    x = rng.random(shape) * (255 if valid else 300) - (0 if valid else 20)
    y = (rng.integers(0, int(rng.integers(2, 4)), n) if valid
         else rng.integers(-2, 6, n).astype(_DTYPES[int(rng.integers(len(_DTYPES)))]))
    arrays: dict[str, Any] = {"x": x.astype(np.uint8 if valid else dtype), "y": y}
    for key in ("x", "y"):
        if rng.random() < 0.1:
            del arrays[key]
    if rng.random() < 0.2:
        arrays["class_names"] = np.array([f"c{i}" for i in range(int(rng.integers(0, 6)))])
    np.savez(d / "data.npz", **arrays)
    if rng.random() < 0.1:  # damaged file
        raw = bytearray((d / "data.npz").read_bytes())
        (d / "data.npz").write_bytes(bytes(raw[: int(rng.integers(len(raw)))]))
    _sample("npz", rng, path=d / "data.npz")


def _folder_case(rng: np.random.Generator, d: Path, space: SearchSpace) -> None:
    root = d / "images"
    for c in range(int(rng.integers(0, 5))):
        cls = root / f"class{c}"
        cls.mkdir(parents=True)
        for i in range(int(rng.integers(0, 6))):
            side = (int(rng.integers(1, 12)), int(rng.integers(1, 12)))
            mode = str(rng.choice(["L", "RGB", "RGBA", "P", "1"]))
            img = Image.fromarray(rng.integers(0, 256, (side[1], side[0], 3), dtype=np.uint8))
            path = cls / f"{i}.png"
            img.convert(mode).save(path)
            if rng.random() < 0.15:
                path.write_bytes(path.read_bytes()[: int(rng.integers(1, 40))])
    root.mkdir(exist_ok=True)
    _sample("folder", rng, data_dir=root)


def _config_case(rng: np.random.Generator, d: Path, space: SearchSpace) -> None:
    names = [f for f in MetaConfig.__dataclass_fields__]
    keys = rng.choice(names, size=int(rng.integers(1, 4)), replace=False)
    MetaConfig(**{str(k): _VALUES[int(rng.integers(len(_VALUES)))] for k in keys})


_CASES: dict[str, Callable[[np.random.Generator, Path, SearchSpace], None]] = {
    "checkpoint": _checkpoint_case, "npz": _npz_case, "folder": _folder_case,
    "config": _config_case}


def fuzz(*, n: int, seed: int = 0, workdir: str | os.PathLike,
         kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Run ``n`` cases (kinds in turn), case ``i`` from ``default_rng([seed, i])``; return the
    counts per kind and every escape (kind, case, exception type and message)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ConfigError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    space = SearchSpace.preset("tiny")
    work = Path(workdir)
    by_kind = {k: {"cases": 0, "ok": 0, "clean_error": 0, "escaped": 0} for k in kinds}
    escapes: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i in range(n):
        kind = kinds[i % len(kinds)]
        case_dir = work / f"case{i}"
        case_dir.mkdir(parents=True, exist_ok=True)
        stats = by_kind[kind]
        stats["cases"] += 1
        try:
            _CASES[kind](np.random.default_rng([seed, i]), case_dir, space)
            stats["ok"] += 1
        except CLEAN:
            stats["clean_error"] += 1
        except Exception as e:  # noqa: BLE001  (counting what escapes is the point)
            stats["escaped"] += 1
            escapes.append({"kind": kind, "case": i, "type": type(e).__name__,
                            "message": str(e)[:300]})
        finally:
            shutil.rmtree(case_dir, ignore_errors=True)
    return {"n": n, "seed": seed, "seconds": time.perf_counter() - start, "by_kind": by_kind,
            "escaped": len(escapes), "escapes": escapes}


__all__ = ["CLEAN", "KINDS", "fuzz"]
