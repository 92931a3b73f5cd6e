"""Atomic, ``weights_only``-loadable checkpoints.

A checkpoint is a ``torch.save`` of plain data: state_dicts, RNG states (as tensors and lists),
the search space as a dict, the config, and a format version. It is written to a temporary file
in the same directory, fsync'ed, then renamed over the target, so a crash (even ``kill -9``)
never leaves a half-written checkpoint: the previous one stays intact.

Usage::

    save_checkpoint(path, {"W": model.W.state_dict(), "step": 10, ...}, space=space)
    state = load_checkpoint(path, space=space)          # clear errors on any mismatch
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_base.search_space import SearchSpace

FORMAT = "pyro-base-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as ``weights_only``-safe data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any], *,
                    space: SearchSpace | None) -> Path:
    """Atomically write ``state`` (plus format, version and search space) to ``path``.

    ``space=None`` (explicitly) for checkpoints of networks outside a search space, such as the
    discrete evaluation network of :mod:`pyro_base.inference.evaluate.train`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    if space is not None:
        payload["space"] = space.to_dict()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, *, space: SearchSpace | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; any problem raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - damaged bytes fail anywhere in torch's readers
        # (zipfile, the weights_only unpickler, the legacy format's struct unpacking, ...);
        # the hypothesis test in tests/test_faults.py found struct.error for b"M".
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated "
                              f"({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-base checkpoint (no '{FORMAT}' header)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {state.get('version')!r}; "
                              f"this pyro-base reads version {VERSION}")
    if space is not None:
        try:
            saved = SearchSpace.from_dict(state["space"])
        except Exception as e:  # noqa: BLE001 - any malformed space dict
            raise CheckpointError(f"checkpoint {path} has no valid search space "
                                  f"({type(e).__name__}: {str(e)[:200]})") from e
        if saved != space:
            current = space.to_dict()
            diff = {k: (v, current.get(k)) for k, v in saved.to_dict().items()
                    if current.get(k) != v}
            raise CheckpointError(f"checkpoint {path} is from another search space; "
                                  f"differing fields (checkpoint, current): {diff}")
    return state
