"""Benchmark: pyro-base's meta-training step against a plain eager DARTS-style supernet step.

For every configuration (search-space preset x batch x relaxation) it times, on one machine:

* **reference**: the supernet's weights as ``nn.Parameter``, ``z = gumbel_softmax(alpha)`` per
  cell type, cross-entropy, ``backward``, SGD (momentum) on the weights and Adam on ``alpha``;
  no Pyro. Throughput = ``batch`` images per step.
* **ours (pyro)**: one :meth:`MetaSVI.step` (Reptile) of ``--tasks-per-step`` tasks, each
  adapted for ``--inner-steps`` steps on a support set of ``batch`` images with the
  ``TraceMeanField_ELBO`` inner loss. Throughput = ``C * T * batch`` images through the supernet
  per second, inner steps included (query scoring is off).
* **ours (functional)**: the same meta-step with ``elbo_impl="functional"``: the same loss
  written without Pyro (equal to float rounding; ``tests/test_bench.py``), so
  ``pyro overhead = time(pyro) / time(functional)``.
* **ours (vmap)**, ``concrete`` only: the same meta-step (full-batch inner Adam, Reptile
  update) with the C tasks' inner loops batched by :func:`~inference.batched.batched_adapt`
  (``torch.func.vmap``, supernet with ``skip_zero=False``).

Relaxations: ``concrete`` (the default estimator: relaxed samples, every op computed) and
``straight_through`` (hard one-hot forward, only the selected op per edge is computed).
The three steps are timed round-robin. Peak memory: ``torch.cuda.max_memory_allocated`` on
CUDA; on CPU the growth of the process's peak RSS during a step's calls (``getrusage``; 0 when an
earlier step already peaked higher, so read it as a rough upper-bound indicator).

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

from inference.batched import batched_adapt
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
                   help="skip the vmapped variant (it holds C tasks' activations at once)")
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
            if device.type == "cuda":
                mem[name] = max(mem[name], torch.cuda.max_memory_allocated(device) / 2**20)
            else:
                mem[name] += _rss_mib() - rss0
    return {k: (statistics.median(times[k]), mem[k]) for k in steps}


def reference_step(space: SearchSpace, batch: int, device: torch.device,
                   temperature: float) -> Callable[[], float]:
    """A plain DARTS-style step: relaxed one-hot z, cross-entropy, backward, SGD + Adam."""
    net = SuperNet(space, skip_zero=False).to(device)
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


def ours_step(space: SearchSpace, batch: int, device: torch.device, *, relaxation: str,
              elbo_impl: str, inner_steps: int, tasks_per_step: int, temperature: float,
              seed: int) -> Callable[[], float]:
    """One Reptile meta-step of pyro-base on ``tasks_per_step`` synthetic tasks."""
    torch.manual_seed(seed)
    model = BASEModel(SuperNet(space), relaxation=make_relaxation(relaxation),
                      beta=0.01).to(device)
    guide = OptimizationEmbeddingGuide(model, inner_steps=inner_steps, elbo_impl=elbo_impl)
    svi = MetaSVI(model, guide, tasks_per_step=tasks_per_step, temperature=temperature,
                  seed=seed, log_query=False)
    shape = (batch, space.in_channels, space.input_size, space.input_size)
    tasks = [Task(name=f"bench{c}", n_classes=space.n_classes,
                  support=(torch.randn(shape, device=device),
                           torch.randint(0, space.n_classes, (batch,), device=device)),
                  query=(torch.randn(shape, device=device),
                         torch.randint(0, space.n_classes, (batch,), device=device)))
             for c in range(tasks_per_step)]

    def step() -> float:
        svi.step(tasks)
        return tasks_per_step * inner_steps * batch

    return step


def vmap_step(space: SearchSpace, batch: int, device: torch.device, *, inner_steps: int,
              tasks_per_step: int, temperature: float, seed: int) -> Callable[[], float]:
    """The Reptile meta-step with the C inner loops in one vmapped computation."""
    torch.manual_seed(seed)
    model = BASEModel(SuperNet(space, skip_zero=False), beta=0.01).to(device)
    guide = OptimizationEmbeddingGuide(model, inner_steps=inner_steps, elbo_impl="functional")
    shape = (tasks_per_step, batch, space.in_channels, space.input_size, space.input_size)
    xs = torch.randn(shape, device=device)
    ys = torch.randint(0, space.n_classes, shape[:2], device=device)

    def step() -> float:
        params, _ = batched_adapt(guide, xs, ys, n_classes=space.n_classes,
                                  temperature=temperature)
        with torch.no_grad():
            for n, p in model.W.named_tensors().items():
                p.add_(params[n].mean(0) - p)  # W <- W + lambda * mean_c(adapted_c - W)
        return tasks_per_step * inner_steps * batch

    return step


def run_config(name: str, batch: int, relaxation: str, args: argparse.Namespace,
               device: torch.device) -> dict[str, Any]:
    space = SearchSpace.preset(name)
    pyro.clear_param_store()
    steps = {"ref": reference_step(space, batch, device, args.temperature)}
    for impl in ("pyro", "functional"):
        steps[impl] = ours_step(space, batch, device, relaxation=relaxation, elbo_impl=impl,
                                inner_steps=args.inner_steps,
                                tasks_per_step=args.tasks_per_step,
                                temperature=args.temperature, seed=args.seed)
    if relaxation == "concrete" and not args.no_vmap:
        steps["vmap"] = vmap_step(space, batch, device, inner_steps=args.inner_steps,
                                  tasks_per_step=args.tasks_per_step,
                                  temperature=args.temperature, seed=args.seed)
    timed = measure(steps, warmup=args.warmup, repeats=args.repeats, device=device)
    ours = args.tasks_per_step * args.inner_steps * batch
    images = {"ref": batch, "pyro": ours, "functional": ours, "vmap": ours}
    row: dict[str, Any] = {"config": name, "batch": batch, "relaxation": relaxation}
    for key, (t, m) in timed.items():
        row[f"{key}_s_per_step"] = t
        row[f"{key}_img_s"] = images[key] / t
        row[f"{key}_mem_mib"] = m
    row["ratio"] = row["pyro_img_s"] / row["ref_img_s"]
    row["functional_ratio"] = row["functional_img_s"] / row["ref_img_s"]
    row["pyro_overhead"] = row["functional_img_s"] / row["pyro_img_s"]
    if "vmap" in timed:
        row["vmap_ratio"] = row["vmap_img_s"] / row["ref_img_s"]
    return row


def format_table(rows: list[dict[str, Any]], mem_unit: str) -> str:
    head = ("config", "batch", "relaxation", "ref img/s", "ours img/s", "ratio",
            "no-Pyro img/s", "no-Pyro ratio", "Pyro overhead", "vmap img/s", "vmap ratio",
            f"mem ref/ours/vmap ({mem_unit})")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        vmap = "vmap_img_s" in r
        lines.append(" | ".join((
            r["config"], str(r["batch"]), r["relaxation"], f"{r['ref_img_s']:.1f}",
            f"{r['pyro_img_s']:.1f}", f"{r['ratio']:.2f}x", f"{r['functional_img_s']:.1f}",
            f"{r['functional_ratio']:.2f}x", f"{r['pyro_overhead']:.3f}x",
            f"{r['vmap_img_s']:.1f}" if vmap else "n/a",
            f"{r['vmap_ratio']:.2f}x" if vmap else "n/a",
            f"{r['ref_mem_mib']:.0f} / {r['pyro_mem_mib']:.0f} / "
            + (f"{r['vmap_mem_mib']:.0f}" if vmap else "n/a"))))
    return "\n".join(f"| {line} |" for line in lines)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = resolve_device(args.device)
    rows = [run_config(name, batch, relax, args, device)
            for name in args.config for batch in args.batch for relax in args.relaxation]
    mem_unit = "MiB peak" if device.type == "cuda" else "MiB RSS growth"
    meta = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__, "pyro": pyro.__version__,
            "threads": torch.get_num_threads(), "inner_steps": args.inner_steps,
            "tasks_per_step": args.tasks_per_step, "repeats": args.repeats,
            "warmup": args.warmup, "temperature": args.temperature}
    print(f"# {meta['date']} {meta['device']} torch {meta['torch']} pyro {meta['pyro']} "
          f"threads {meta['threads']} T={args.inner_steps} C={args.tasks_per_step}")
    print(format_table(rows, mem_unit))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main(parse_args())
