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
  (:class:`~inference.static_loop.StaticInnerLoop`), replayed as a CUDA graph on CUDA (run
  eagerly on CPU).
* ``batched`` / ``batched_graph``: the same two with ``batch_tasks=True``: the C tasks' inner
  loops in one ``vmap``-ed step (``--no-vmap`` skips them: they hold C tasks' activations).

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
from the ``pyro`` path (float rounding, by design, on CPU).

Usage::

    OMP_NUM_THREADS=1 python scripts/bench.py --config cpu tiny --batch 32 --json bench.json
    python scripts/bench.py --config darts --batch 64 256 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
import torch.nn.functional as F

from inference.factory import resolve_device
from inference.guides import OptimizationEmbeddingGuide
from inference.meta_svi import MetaSVI
from models.base_model import BASEModel
from models.relaxations import make_relaxation
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all rows as JSON here")
    args = p.parse_args(argv)
    args.config = args.config or ["cpu"]
    args.relaxation = args.relaxation or list(RELAXATIONS)
    for name in ("inner_steps", "tasks_per_step", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or min(args.batch) < 1:
        p.error("--warmup must be >= 0 and every --batch >= 1")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def measure(steps: dict[str, Callable[[], Any]], *, warmup: int, repeats: int,
            device: torch.device) -> dict[str, tuple[float, float]]:
    """Median seconds per call of each step and its peak memory (MiB).

    The steps are timed round-robin (one call of each per round), so that a load change on a
    shared machine hits them alike. Memory: CUDA peak allocated over the step's calls, or the
    growth of the process's peak RSS during its calls (CPU).
    """
    times: dict[str, list[float]] = {k: [] for k in steps}
    mem = dict.fromkeys(steps, 0.0)
    reserved = dict.fromkeys(steps, 0.0)
    if device.type == "cuda":  # capturing a graph empties the allocator's cache: warm up twice
        warmup = max(warmup, 2)
    for r in range(warmup + repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rss0 = _rss_mib()
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":  # a captured graph's pool is reserved, not allocated
                mem[name] = max(mem[name], torch.cuda.max_memory_allocated(device) / 2**20)
                reserved[name] = max(reserved[name], torch.cuda.memory_reserved(device) / 2**20)
            else:
                mem[name] += _rss_mib() - rss0
    return {k: (statistics.median(times[k]), mem[k], reserved[k]) for k in steps}


def reference_step(space: SearchSpace, batch: int, device: torch.device,
                   temperature: float) -> Callable[[], float]:
    """A plain DARTS-style step: relaxed one-hot z, cross-entropy, backward, SGD + Adam."""
    net = SuperNet(space, skip_zero=False, cpu_fast=False).to(device)
    alpha = {c: torch.zeros(space.z_shape, device=device, requires_grad=True)
             for c in space.cell_types}
    w_opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(alpha.values(), lr=3e-4, betas=(0.5, 0.999))
    x = torch.randn(batch, space.in_channels, space.input_size, space.input_size, device=device)
    y = torch.randint(0, space.n_classes, (batch,), device=device)

    def step() -> float:
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        z = {c: F.gumbel_softmax(a, tau=temperature) for c, a in alpha.items()}
        loss = F.cross_entropy(net(x, z), y)
        loss.backward()
        w_opt.step()
        a_opt.step()
        return batch

    return step


def _tasks(space: SearchSpace, batch: int, n: int, device: torch.device) -> list[Task]:
    shape = (batch, space.in_channels, space.input_size, space.input_size)
    return [Task(name=f"bench{c}", n_classes=space.n_classes,
                 support=(torch.randn(shape, device=device),
                          torch.randint(0, space.n_classes, (batch,), device=device)),
                 query=(torch.randn(shape, device=device),
                        torch.randint(0, space.n_classes, (batch,), device=device)))
            for c in range(n)]


def _model(space: SearchSpace, relaxation: str, device: torch.device, *,
           skip_zero: bool, cpu_fast: bool = True) -> BASEModel:
    return BASEModel(SuperNet(space, skip_zero=skip_zero, cpu_fast=cpu_fast),
                     relaxation=make_relaxation(relaxation), beta=0.01).to(device)


def ours_step(space: SearchSpace, batch: int, device: torch.device, *, relaxation: str,
              elbo_impl: str, batch_tasks: bool, inner_steps: int, tasks_per_step: int,
              temperature: float, seed: int, cpu_fast: bool = True) -> Callable[[], float]:
    """One Reptile meta-step of pyro-base on ``tasks_per_step`` synthetic tasks."""
    torch.manual_seed(seed)
    model = _model(space, relaxation, device, skip_zero=elbo_impl != "graph" and not batch_tasks,
                   cpu_fast=cpu_fast)
    guide = OptimizationEmbeddingGuide(model, inner_steps=inner_steps, elbo_impl=elbo_impl)
    svi = MetaSVI(model, guide, tasks_per_step=tasks_per_step, temperature=temperature,
                  seed=seed, log_query=False, batch_tasks=batch_tasks)
    tasks = _tasks(space, batch, tasks_per_step, device)

    def step() -> float:
        svi.step(tasks)
        return tasks_per_step * inner_steps * batch

    return step


def max_loss_diff(space: SearchSpace, batch: int, device: torch.device, *, relaxation: str,
                  impls: list[str], inner_steps: int, temperature: float,
                  seed: int) -> dict[str, float]:
    """Per implementation, max |loss_t - loss_t(pyro)| over one task's inner loop."""
    torch.manual_seed(seed)
    model = _model(space, relaxation, device, skip_zero=False)
    torch.manual_seed(seed)  # the same W, stock modules
    stock = _model(space, relaxation, device, skip_zero=False, cpu_fast=False)
    (task,) = _tasks(space, batch, 1, device)
    x, y = task.support
    out, ref = {}, None
    for impl in impls:
        if impl == "pyro_stock":
            guide = OptimizationEmbeddingGuide(stock, inner_steps=inner_steps)
            torch.manual_seed(seed + 1)
            _, losses = guide.adapt(x, y, n_classes=space.n_classes, temperature=temperature)
            out[impl] = max(abs(a - b) for a, b in zip(losses, ref, strict=True))
            continue
        guide = OptimizationEmbeddingGuide(model, inner_steps=inner_steps,
                                           elbo_impl="graph" if impl.startswith("batched")
                                           else impl)
        torch.manual_seed(seed + 1)
        if impl.startswith("batched"):  # one task through the vmapped loop
            loop = guide.static_loop(x_shape=tuple(x.shape[1:]), size=batch,
                                     tasks=1, device=device,
                                     dtype=x.dtype)
            loop.capture = loop.capture and impl == "batched_graph"
            _, losses_t = loop.run(model.W.named_tensors(), x[None], y[None],
                                   n_classes=None, temperature=temperature)
            losses = losses_t[:, 0].tolist()
        else:
            _, losses = guide.adapt(x, y, n_classes=space.n_classes, temperature=temperature)
        ref = losses if ref is None else ref
        out[impl] = max(abs(a - b) for a, b in zip(losses, ref, strict=True))
    return out


def run_config(name: str, batch: int, relaxation: str, args: argparse.Namespace,
               device: torch.device) -> dict[str, Any]:
    space = SearchSpace.preset(name)
    pyro.clear_param_store()
    variants = [("pyro", False), ("pyro_stock", False), ("functional", False)]
    if relaxation == "concrete":
        variants.append(("graph", False))
        if not args.no_vmap:
            variants += [("functional", True), ("graph", True)]
    steps = {"ref": reference_step(space, batch, device, args.temperature)}
    for impl, batched in variants:
        key = ("batched_" if batched else "") + impl
        steps["batched" if key == "batched_functional" else key] = ours_step(
            space, batch, device, relaxation=relaxation,
            elbo_impl="pyro" if impl == "pyro_stock" else impl, batch_tasks=batched,
            inner_steps=args.inner_steps, tasks_per_step=args.tasks_per_step,
            temperature=args.temperature, seed=args.seed, cpu_fast=impl != "pyro_stock")
    timed = measure(steps, warmup=args.warmup, repeats=args.repeats, device=device)
    ours = args.tasks_per_step * args.inner_steps * batch
    row: dict[str, Any] = {"config": name, "batch": batch, "relaxation": relaxation,
                           "variants": list(timed)}
    for key, (t, m, r) in timed.items():
        row[f"{key}_s_per_step"] = t
        row[f"{key}_reserved_mib"] = r
        row[f"{key}_img_s"] = (batch if key == "ref" else ours) / t
        row[f"{key}_mem_mib"] = m
        row[f"{key}_ratio"] = row[f"{key}_img_s"] / (batch / timed["ref"][0])
    row["ratio"] = row["pyro_ratio"]
    row["pyro_overhead"] = row["functional_img_s"] / row["pyro_img_s"]
    row["max_loss_diff"] = max_loss_diff(
        space, min(batch, 16), device, relaxation=relaxation,
        impls=[k for k in timed if k != "ref"], inner_steps=args.inner_steps,
        temperature=args.temperature, seed=args.seed)
    return row


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
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"bench.py: error: --device: {e}", file=sys.stderr)
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


if __name__ == "__main__":
    main(parse_args())
