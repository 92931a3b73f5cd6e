"""A meta-training run directory, as written by ``scripts/meta_svi.py``: checks and metrics.

Layout::

    RUN_DIR/config.yaml          the resolved configuration
    RUN_DIR/metrics.jsonl        one JSON object per meta-step (step, loss, temperature, ...,
                                 tasks: [{task, family, inner_first, inner_last, query_loss}],
                                 agreement: {group: {cos, ratio, noise_ratio}} or null,
                                 arch_entropy_per_cell, sigma; see
                                 pyro_base.inference.vi.diagnostics),
                                 then lines with "event": "adapt" (task, family,
                                 steps, query_accuracy and start: the start adapt
                                 chooses by default and its accuracy; meta_accuracy,
                                 untrained_accuracy, ...: pyro_base.inference.run.heldout)
    RUN_DIR/log.txt              the log
    RUN_DIR/checkpoint.pt        W, optimiser and RNG state (pyro_base.checkpoint)
    RUN_DIR/prior_genotype.json  the genotype of W itself
    RUN_DIR/genotypes/<task>.json  adapted genotypes of the held-out tasks (default start)
    RUN_DIR/posterior.nc         the ArviZ posterior (pyro_base.inference.posterior.draws)

Models are not rebuilt here; :func:`load_run` only checks files and reads text.

Usage::

    run = load_run("runs/omniglot")                        # needs checkpoint.pt by default
    run = load_run("runs/omniglot", require=("posterior.nc", "metrics.jsonl"))
    run.metrics[-1]["loss"], run.adapt_events, run.genotypes()["task-0"]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyro_base.genotype import Genotype
from pyro_base.inference.run.runlog import (
    CHECKPOINT,
    CONFIG,
    GENOTYPES,
    LOG,
    METRICS,
    POSTERIOR,
    PRIOR_GENOTYPE,
)

RUN_FILES = (CONFIG, METRICS, LOG, CHECKPOINT, PRIOR_GENOTYPE, GENOTYPES, POSTERIOR)


class RunDirError(ValueError):
    """A run directory that lacks what is needed; the message names the directory and files."""


@dataclass(frozen=True)
class RunRecord:
    """A checked run directory: paths, and the records of ``metrics.jsonl``."""

    path: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    adapt_events: list[dict[str, Any]] = field(default_factory=list)

    def file(self, name: str) -> Path | None:
        """``path / name`` if it exists, else ``None``."""
        p = self.path / name
        return p if p.exists() else None

    @property
    def checkpoint(self) -> Path | None:
        return self.file(CHECKPOINT)

    @property
    def posterior(self) -> Path | None:
        return self.file(POSTERIOR)

    def config(self) -> dict[str, Any] | None:
        """``config.yaml`` as a dict (``None`` if absent)."""
        from pyro_base.config import load_yaml

        p = self.file(CONFIG)
        return None if p is None else load_yaml(p.read_text()) or {}

    def prior_genotype(self) -> Genotype | None:
        p = self.file(PRIOR_GENOTYPE)
        return None if p is None else Genotype.load(p)

    def genotypes(self) -> dict[str, Genotype]:
        """``genotypes/<task>.json`` by task name (empty if the folder is absent)."""
        folder = self.path / GENOTYPES
        if not folder.is_dir():
            return {}
        return {p.stem: Genotype.load(p) for p in sorted(folder.glob("*.json"))}


def read_metrics(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(meta-step records, adapt events)`` of a ``metrics.jsonl`` file (blank lines skipped).

    A line that is not a JSON object raises a ``ValueError`` naming the file and line.
    """
    steps: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    path = Path(path)
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i} is not valid JSON: {e}") from e
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{i} must be a JSON object, got {type(record).__name__}")
        (events if record.get("event") == "adapt" else steps).append(record)
    return steps, events


def load_run(run_dir: str | os.PathLike, *,
             require: tuple[str, ...] = (CHECKPOINT,)) -> RunRecord:
    """Check ``run_dir`` and read its ``metrics.jsonl`` (if present).

    :param require: files that must exist (names from the layout in the module docstring).
    :raises RunDirError: the directory is missing, or lacks a required file; the message names
        the missing files and lists what the directory holds.
    """
    path = Path(run_dir)
    unknown = [r for r in require if r not in RUN_FILES]
    if unknown:
        raise ValueError(f"require names unknown run files {unknown}; known: {list(RUN_FILES)}")
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist (or is not a directory)")
    missing = [r for r in require if not (path / r).exists()]
    if missing:
        present = sorted(p.name for p in path.iterdir()) or ["nothing"]
        hint = (" (no checkpoint: did meta-training finish, or is this the parent of the run "
                "directory?)" if CHECKPOINT in missing else "")
        raise RunDirError(f"run directory {path} has no {', '.join(missing)}{hint}; "
                          f"it holds: {', '.join(present)}")
    metrics, events = ([], [])
    if (path / METRICS).is_file():
        metrics, events = read_metrics(path / METRICS)
    return RunRecord(path=path, metrics=metrics, adapt_events=events)
