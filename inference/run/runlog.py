"""The run directory: resolved config, ``metrics.jsonl``, log file, checkpoint, genotypes.

Layout written by ``scripts/meta_svi.py``::

    RUN_DIR/config.yaml          the resolved MetaConfig
    RUN_DIR/metrics.jsonl        one JSON object per meta-step, then {"event": "adapt", ...}
    RUN_DIR/log.txt              the log
    RUN_DIR/checkpoint.pt        W, optimizer, step, RNG state, refit logits (atomic; weights_only)
    RUN_DIR/arch_refit.json      the architecture refit: settings, time, op entropy before/after
    RUN_DIR/prior_genotype.json  the genotype of alpha (zero adaptation)
    RUN_DIR/genotypes/<task>.json  the adapted genotype per held-out task
    RUN_DIR/posterior.nc         ArviZ InferenceData of the held-out posteriors and the prior
    RUN_DIR/task_splits.json     on-disk sources: the class names of each split

Only rank 0 of a distributed run writes (``RunDir(..., enabled=False)`` on the others).

Usage::

    run = RunDir("runs/x")
    run.setup_logging()
    run.append_metrics({"step": 0, "loss": 1.2})
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LOG = "log.txt"
CHECKPOINT = "checkpoint.pt"
PRIOR_GENOTYPE = "prior_genotype.json"
GENOTYPES = "genotypes"
POSTERIOR = "posterior.nc"
TASK_SPLITS = "task_splits.json"
ARCH_REFIT = "arch_refit.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them readable
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def safe_name(name: str) -> str:
    """A file-name-safe version of a task name (``procedural/motif/test/0`` -> ``...``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def setup_logging(self, level: int = logging.INFO) -> None:
        """Log to ``log.txt`` (appending, so a resumed run keeps its history)."""
        if not self.enabled:
            return
        handler = logging.FileHandler(self.path / LOG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level)

    def append_metrics(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines of meta-steps >= ``step`` (after a resume from ``step``).

        A torn last line (the process was killed while writing it) is dropped too.
        """
        path = self.path / METRICS
        if not self.enabled or not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            record = _parse(line)
            if record is not None and record.get("step", -1) < step and "event" not in record:
                keep.append(line)
        path.write_text("".join(line + "\n" for line in keep))

    def remove_stale_temps(self) -> list[Path]:
        """Delete temporary checkpoint files left by a process killed while saving."""
        if not self.enabled:
            return []
        stale = sorted(self.path.glob(CHECKPOINT + ".*.tmp"))
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        if self.enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(_jsonable(data), indent=2))
            os.replace(tmp, path)
        return path
