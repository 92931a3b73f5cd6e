"""The timed steps of ``pyro-base bench``: a plain eager DARTS-style supernet step (the
reference) and pyro-base's meta-step in each of its implementations, with an equal-loss check.

:func:`run_config` times every variant of one configuration (search-space preset x batch x
relaxation) round-robin and returns one row (images/s, ratios to the reference, memory, the
largest per-step loss difference from the ``pyro`` path); the command's docstring describes
the variants.

Usage::

    row = run_config("cpu", 32, "concrete", args, torch.device("cpu"))
    row["pyro_ratio"], row["max_loss_diff"]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
import torch.nn.functional as F

from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_svi import MetaSVI
from pyro_base.models.base_model import BASEModel
from pyro_base.models.relaxations import make_relaxation
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task


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
    shared machine hits them alike, and each round starts one step later in the order, so that
    no step always follows the same one (on a CPU the step after the reference, whose large
    buffers the allocator has just handed back to the system, pays for faulting its memory in
    again: measured 15-20% on the ``cpu`` preset). Memory: CUDA peak allocated over the step's
    calls, or the
    growth of the process's peak RSS during its calls (CPU).
    """
    times: dict[str, list[float]] = {k: [] for k in steps}
    mem = dict.fromkeys(steps, 0.0)
    reserved = dict.fromkeys(steps, 0.0)
    if device.type == "cuda":  # capturing a graph empties the allocator's cache: warm up twice
        warmup = max(warmup, 2)
    names = list(steps)
    for r in range(warmup + repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            step = steps[name]
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
              temperature: float, seed: int, cpu_fast: bool = True,
              workers: int = 1) -> Callable[[], float]:
    """One Reptile meta-step of pyro-base on ``tasks_per_step`` synthetic tasks (its tasks in
    ``workers`` processes when above 1; the step's ``close`` attribute stops them)."""
    torch.manual_seed(seed)
    model = _model(space, relaxation, device, skip_zero=elbo_impl != "graph" and not batch_tasks,
                   cpu_fast=cpu_fast)
    guide = OptimizationEmbeddingGuide(model, inner_steps=inner_steps, elbo_impl=elbo_impl)
    svi = MetaSVI(model, guide, tasks_per_step=tasks_per_step, temperature=temperature,
                  seed=seed, log_query=False, batch_tasks=batch_tasks, workers=workers)
    tasks = _tasks(space, batch, tasks_per_step, device)

    def step() -> float:
        svi.step(tasks)
        return tasks_per_step * inner_steps * batch

    step.close = svi.close  # type: ignore[attr-defined]
    return step


def workers_diff(space: SearchSpace, batch: int, device: torch.device, *, relaxation: str,
                 workers: int, inner_steps: int, tasks_per_step: int, temperature: float,
                 seed: int) -> tuple[float, float]:
    """One meta-step from the same ``W`` and seed in one process and in ``workers``: the
    largest absolute differences of the tasks' inner losses and of the updated ``W``."""
    out = []
    for n in (1, workers):
        torch.manual_seed(seed)
        model = _model(space, relaxation, device, skip_zero=True)
        guide = OptimizationEmbeddingGuide(model, inner_steps=inner_steps)
        svi = MetaSVI(model, guide, tasks_per_step=tasks_per_step, temperature=temperature,
                      seed=seed, log_query=False, workers=n)
        torch.manual_seed(seed + 1)
        try:
            metrics = svi.step(_tasks(space, batch, tasks_per_step, device))
        finally:
            svi.close()
        out.append(([r[k] for r in metrics["tasks"] for k in ("inner_first", "inner_last")],
                    torch.cat([p.detach().reshape(-1) for p in model.W.parameters()])))
    (la, wa), (lb, wb) = out
    return (max(abs(a - b) for a, b in zip(la, lb, strict=True)),
            float((wa - wb).abs().max()))


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
    workers = args.workers if device.type == "cpu" and args.tasks_per_step > 1 else 1
    if workers > 1:
        steps["pyro_workers"] = ours_step(
            space, batch, device, relaxation=relaxation, elbo_impl="pyro", batch_tasks=False,
            inner_steps=args.inner_steps, tasks_per_step=args.tasks_per_step,
            temperature=args.temperature, seed=args.seed, workers=workers)
    try:
        timed = measure(steps, warmup=args.warmup, repeats=args.repeats, device=device)
    finally:
        for step in steps.values():
            getattr(step, "close", lambda: None)()
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
        impls=[k for k in timed if k not in ("ref", "pyro_workers")],
        inner_steps=args.inner_steps, temperature=args.temperature, seed=args.seed)
    if workers > 1:
        row["workers"] = workers
        row["pyro_workers_speedup"] = timed["pyro"][0] / timed["pyro_workers"][0]
        row["max_loss_diff"]["pyro_workers"], row["pyro_workers_max_w_diff"] = workers_diff(
            space, min(batch, 16), device, relaxation=relaxation, workers=workers,
            inner_steps=args.inner_steps, tasks_per_step=args.tasks_per_step,
            temperature=args.temperature, seed=args.seed)
    return row
