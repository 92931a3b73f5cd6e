"""Helpers shared by the reliability tests: run ``scripts/meta_svi.py`` as a subprocess.

A small but real configuration (16x16 procedural tasks, 2 cells of width 4, 8 meta-steps of
4 tasks) runs in a few seconds; the single-process reference run is made once per session.
The inner optimizer is SGD: with Adam's normalised steps, the float rounding differences of a
different reduction order (2 ranks vs 1 process) grew from ~2e-5 after 4 steps to ~3e-3 after 8
(measured), while with SGD W agreed to 3e-8 after 8 steps.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "meta_svi.py"
STEPS = 8
ARGS = ("--preset", "cpu", "--channels", "4", "--cells", "2", "--nodes", "2",
        "--steps", str(STEPS), "--tasks-per-step", "4", "--inner-steps", "2",
        "--inner-optimizer", "sgd", "--n-support", "16", "--n-query", "16",
        "--inner-batch", "8", "--n-heldout", "1",
        "--adapt-steps", "1", "--num-samples", "1", "--deterministic", "--no-progress",
        "--collective-timeout", "30", "--arch-refit-tasks", "2", "--arch-refit-steps", "2",
        "--arch-refit-workers", "1")
TIMEOUT = 180


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(k, None)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(*args: str, nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, str(SCRIPT), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(SCRIPT), *args]


def run(*args: str, nproc: int = 1, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args, nproc=nproc), cwd=ROOT, env=env(**extra_env),
                          capture_output=True, text=True, timeout=TIMEOUT)


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@functools.cache
def reference_run() -> Path:
    """The uninterrupted single-process run (made once per session)."""
    run_dir = Path(tempfile.mkdtemp(prefix="pyro-base-ref-")) / "ref"
    proc = run(*ARGS, "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@functools.cache
def script_module() -> ModuleType:
    """The main job's command module (``cli`` and its callbacks), which ``scripts/meta_svi.py``
    runs."""
    return importlib.import_module("pyro_base.inference.commands.meta_svi")
