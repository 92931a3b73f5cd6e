"""Benchmark: pyro-base's meta-training step against a plain eager DARTS-style supernet step.

For every configuration (search-space preset x batch x relaxation) it times, on one machine,
round-robin, these variants (median seconds per step after warm-up):

* ``ref``: the supernet's weights as ``nn.Parameter``, ``z = gumbel_softmax(alpha)`` per cell
  type, cross-entropy, ``backward``, SGD (momentum) on the weights and Adam on ``alpha``; no
  Pyro, PyTorch's stock modules in the default layout (``cpu_fast=False``): the eager
  DARTS-style step. Throughput = ``batch`` images per step.
* ``pyro`` (ours, the default): one :meth:`MetaSVI.step` (Reptile) of ``--tasks-per-step``
  tasks, each adapted for ``--inner-steps`` steps on a support set of ``batch`` images with the
  ``TraceMeanField_ELBO`` inner loss. Throughput = ``C * T * batch`` images through the
  supernet per second, inner steps included (query scoring is off).
* ``pyro_stock``: the same step with the supernet's CPU fast path off (``cpu_fast=False``:
  stock convolutions in the default layout), so ``pyro_stock -> pyro`` is the fast path's
  gain (on CUDA the two are the same computation).
* ``functional``: the same meta-step with ``elbo_impl="functional"`` (the same loss without
  Pyro), so ``pyro overhead = time(pyro) / time(functional)``.
* ``graph``: ``elbo_impl="graph"``: the inner step over static buffers
  (:class:`~pyro_base.inference.vi.static_loop.StaticInnerLoop`), replayed as a CUDA graph on CUDA
  (run
  eagerly on CPU).
* ``batched`` / ``batched_graph``: the same two with ``batch_tasks=True``: the C tasks' inner
  loops in one ``vmap``-ed step (``--no-vmap`` skips them: they hold C tasks' activations).
* ``pyro_workers`` (CPU, ``--workers`` above 1): the ``pyro`` step with its C tasks adapted
  in ``--workers`` processes of one torch thread each (``MetaSVI(workers=N)``, the main job's
  ``--meta-workers``); the JSON has ``pyro_workers_speedup`` (time of ``pyro`` over its own)
  and ``pyro_workers_max_w_diff``, the largest difference of ``W`` after one step from the
  same seed in one process and in the workers (0 by design: run it with one torch thread).

``graph`` and ``batched*`` compute every op (``skip_zero`` off), so they run for ``concrete``
only; ``straight_through`` (hard one-hot forward, only the selected op per edge computed,
GDAS-style) is timed with ``pyro`` and ``functional``. Peak memory:
``torch.cuda.max_memory_allocated`` on CUDA; on CPU the growth of the process's peak RSS during
a variant's calls (0 when an earlier step already peaked higher: a rough indicator). On CUDA
the JSON also has ``*_reserved_mib`` (a captured graph's memory pool is reserved, not
allocated), and at least two warm-up rounds run (capturing a graph empties the allocator's
cache, which the other variants would otherwise pay for in their first timed round).

Equal-loss check: per configuration, one task adapted from the same seed by each inner-loop
implementation; ``max_loss_diff`` is the largest absolute difference of the per-step losses
from the ``pyro`` path (float rounding, by design, on CPU; for ``pyro_workers`` the step's
inner losses against one process's, 0 by design).

Usage::

    OMP_NUM_THREADS=1 python scripts/bench.py --config cpu tiny --batch 32 --json bench.json
    python scripts/bench.py --config darts --batch 64 256 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and Pyro load in main(), not at import: --help stays fast
    import torch

CONFIGS = ("darts", "cpu", "tiny")
RELAXATIONS = ("concrete", "straight_through")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", nargs="+", action="extend", choices=CONFIGS,
                   help="search-space presets (repeatable; default: cpu)")
    p.add_argument("--batch", nargs="+", type=int, default=[32],
                   help="images per step (reference) and per inner step (ours)")
    p.add_argument("--inner-steps", type=int, default=5, help="T inner steps per task")
    p.add_argument("--tasks-per-step", type=int, default=4, help="C tasks per meta-step")
    p.add_argument("--repeats", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--relaxation", nargs="+", action="extend", choices=RELAXATIONS,
                   help="estimators of ours (default: both)")
    p.add_argument("--no-vmap", action="store_true",
                   help="skip the batched variants (they hold C tasks' activations at once)")
    p.add_argument("--temperature", type=float, default=1.0, help="tau of the relaxations")
    p.add_argument("--workers", type=int, default=2,
                   help="processes of the pyro_workers variant (CPU; 1: not timed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all rows as JSON here")
    args = p.parse_args(argv)
    args.config = args.config or ["cpu"]
    args.relaxation = args.relaxation or list(RELAXATIONS)
    for name in ("inner_steps", "tasks_per_step", "repeats", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or min(args.batch) < 1:
        p.error("--warmup must be >= 0 and every --batch >= 1")
    return args


def format_table(rows: list[dict[str, Any]], mem_unit: str) -> str:
    head = ("config", "batch", "relaxation", "variant", "img/s", "vs ref", "Pyro overhead",
            "max loss diff vs pyro", f"memory ({mem_unit})")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        for v in r["variants"]:
            diff = r["max_loss_diff"].get(v)
            lines.append(" | ".join((
                r["config"], str(r["batch"]), r["relaxation"], v, f"{r[f'{v}_img_s']:.1f}",
                f"{r[f'{v}_ratio']:.2f}x",
                f"{r['pyro_overhead']:.3f}x" if v == "functional" else "",
                "" if diff is None else f"{diff:.1e}", f"{r[f'{v}_mem_mib']:.0f}")))
    return "\n".join(f"| {line} |" for line in lines)


def _meta(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import pyro
    import torch

    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__, "pyro": pyro.__version__,
            "threads": torch.get_num_threads(), "inner_steps": args.inner_steps,
            "tasks_per_step": args.tasks_per_step, "repeats": args.repeats,
            "warmup": args.warmup, "temperature": args.temperature}


def _write_json(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace,
                device: torch.device) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"meta": _meta(args, device), "rows": rows}, indent=2))
    tmp.replace(path)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pyro_base.inference.run.benchmark import run_config
    from pyro_base.training import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"error: --device: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    rows = []
    for name in args.config:
        for batch in args.batch:
            for relax in args.relaxation:
                rows.append(run_config(name, batch, relax, args, device))
                if args.json is not None:  # after every row: a killed run keeps its rows
                    _write_json(args.json, rows, args, device)
    mem_unit = "MiB peak" if device.type == "cuda" else "MiB RSS growth"
    meta = _meta(args, device)
    print(f"# {meta['date']} {meta['device']} torch {meta['torch']} pyro {meta['pyro']} "
          f"threads {meta['threads']} T={args.inner_steps} C={args.tasks_per_step}")
    print(format_table(rows, mem_unit))
    return rows


def cli(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run every configuration, print the table; 0 on success."""
    main(parse_args(argv))
    return 0
