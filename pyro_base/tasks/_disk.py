"""Shared helpers for the on-disk task sources: errors, file checks, readers, normalisation.

:func:`expect_files` finds the files a loader needs and, when some are missing, raises
:class:`MissingDataError` (a ``ValueError`` and ``FileNotFoundError``) listing every expected file
and every directory searched. :func:`read_pickle`, :func:`read_npz`, :func:`get_key`,
:func:`check_labels` and :func:`check_rows` turn corrupt or inconsistent files into
:class:`DataError` naming the file. :func:`images_to_tensor` resizes and normalises images.
The task logic shared by every loader is :class:`pyro_base.tasks._subset.ClassSubsetSource`.

Usage::

    files = expect_files("cifar10", [root, root / "cifar-10-batches-py"], ["test_batch"])
    batch = read_pickle(files["test_batch"])
    labels = check_labels(get_key(batch, "labels", files["test_batch"]), 0, 9, files["test_batch"])

Nothing here downloads anything.
"""


from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class DataError(ValueError):
    """A data set on disk is missing, partial, corrupt or too small for the request."""


class MissingDataError(DataError, FileNotFoundError):
    """Expected files are absent; the message lists them and every path searched."""


def expect_files(
    source: str, dirs: Sequence[Path], names: Sequence[str | tuple[str, ...]], hint: str = ""
) -> dict[str, Path]:
    """Find each of ``names`` in the first of ``dirs`` that holds it.

    An entry may be a tuple of alternatives (e.g. ``("x.gz", "x")``); the result maps the first
    alternative to the path found. Raises :class:`MissingDataError` listing every expected file,
    the missing ones, and the directories searched.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for entry in names:
        alts = (entry,) if isinstance(entry, str) else tuple(entry)
        hit = next((d / a for d in dirs for a in alts if (d / a).exists()), None)
        if hit is None:
            missing.append(" or ".join(alts))
        else:
            found[alts[0]] = hit
    if missing:
        expected = ", ".join(" or ".join((e,) if isinstance(e, str) else e) for e in names)
        searched = ", ".join(str(d) for d in dirs)
        raise MissingDataError(
            f"{source}: missing {len(missing)} file(s): {', '.join(missing)}. "
            f"Expected files: {expected}. Searched: {searched}.{' ' + hint if hint else ''} "
            "Nothing is downloaded; put the files there or pass data_dir."
        )
    return found


def read_pickle(path: Path) -> Any:
    """``pickle.load`` with ``encoding="bytes"``; a corrupt or truncated file names itself."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, ImportError) as e:
        raise DataError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})") from e


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles); a corrupt or truncated file names itself."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: corrupt or truncated npz ({type(e).__name__}: {e})") from e


def get_key(d: Mapping[Any, Any], key: str, path: Path) -> Any:
    """``d[key]`` accepting str or bytes keys; a missing key names the file and keys present."""
    if not isinstance(d, Mapping):
        raise DataError(f"{path}: expected a dict, got {type(d).__name__}")
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise DataError(f"{path}: missing key {key!r}; keys present: {sorted(map(str, d))}")


def check_labels(y: np.ndarray, lo: int, hi: int, path: Path | str) -> np.ndarray:
    """Labels as int64, checked to lie in ``[lo, hi]`` (inclusive); errors name ``path``."""
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if y.size and (y.min() < lo or y.max() > hi):
        raise DataError(
            f"{path}: label out of range: found [{y.min()}, {y.max()}], expected [{lo}, {hi}]"
        )
    return y


def check_rows(path: Path | str, n_images: int, n_labels: int) -> None:
    if n_images != n_labels:
        raise DataError(f"{path}: {n_images} images but {n_labels} labels")


def images_to_tensor(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int | None,
    channels: int | None,
) -> torch.Tensor:
    """uint8 (or float in [0, 1]) NCHW images -> normalised float32 NCHW tensor.

    Resizes to ``image_size`` (bilinear, antialiased) with ``torch.nn.functional.interpolate``;
    a list of differently sized images needs ``image_size``. ``channels=3`` repeats greyscale,
    ``channels=1`` takes the luma of RGB.
    """
    if isinstance(images, np.ndarray):
        batch = [images]
    else:
        batch = [im[None] for im in images]
        if image_size is None and len({im.shape for im in images}) > 1:
            raise DataError(
                f"images have different sizes {sorted({im.shape[1:] for im in images})}; "
                "pass image_size to resize them"
            )
    out = []
    for arr in batch:
        x = torch.from_numpy(np.require(arr, requirements=["C", "W"]))
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        out.append(x)
    x = torch.cat(out)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = (x - m) / s
    if channels == 3 and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    elif channels == 1 and x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x.contiguous()
