"""What every search method shares: the task's search space, the DARTS train/validation split
of the support set, and :class:`SearchSetup` (device, supernet, data stream, cost meter, bar).

Usage::

    s = SearchSetup("darts", task, config, progress=False, total=config.steps)
    (x_train, y_train), (x_val, y_val) = split_half(s.xs, s.ys, config.seed)
    net, opt, sched = s.supernet()
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from pyro_base.inference.search.config import CostMeter, SearchConfig, SearchResult
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task
from pyro_base.training import infinite_batches, oom_guard, resolve_device, sgd_cosine

log = logging.getLogger(__name__)


def space_for_task(config: SearchConfig, task: Task) -> SearchSpace:
    """``config.space`` preset with the task's image size, channels and class count."""
    c, h, w = task.image_shape
    if h != w:
        raise ValueError(f"search spaces need square images, task {task.name!r} has {h}x{w}")
    return SearchSpace.preset(config.space, input_size=int(h), in_channels=int(c),
                              n_classes=task.n_classes)


def split_half(x: torch.Tensor, y: torch.Tensor, seed: int,
               ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A seeded 50/50 split of the support set into train and validation halves (DARTS'
    ``train_portion=0.5``)."""
    if len(x) < 4:
        raise ValueError(f"the support set needs at least 4 images to split, got {len(x)}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    a, b = perm[: len(x) // 2], perm[len(x) // 2:]
    return (x[a], y[a]), (x[b], y[b])


class SearchSetup:
    """Shared state of a search run: device, space, supernet, data stream, meter, bar."""

    def __init__(self, method: str, task: Task, config: SearchConfig, progress: bool,
                 total: int) -> None:
        pyro.set_rng_seed(config.seed)
        self.method, self.task, self.config = method, task, config
        self.device = resolve_device(config.device)
        self.space = space_for_task(config, task)
        self.xs, self.ys = (t.to(self.device) for t in task.support)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.meter = CostMeter()
        self.losses: list[float] = []
        self.bar = tqdm(total=total, disable=not progress, desc=method, dynamic_ncols=True)

    def batches(self, x: torch.Tensor, y: torch.Tensor,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return infinite_batches(x, y, self.config.batch_size, self.generator)

    def supernet(self) -> tuple[SuperNet, torch.optim.Optimizer, Any]:
        cfg = self.config
        net = SuperNet(self.space).to(self.device)
        opt, sched = sgd_cosine(net.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                weight_decay=cfg.w_weight_decay, total_steps=cfg.steps,
                                lr_min=cfg.w_lr_min)
        return net, opt, sched

    def alpha(self) -> tuple[dict[str, torch.Tensor], torch.optim.Adam]:
        """DARTS' architecture parameters ``1e-3 * N(0, 1)`` and their Adam optimizer."""
        cfg = self.config
        alpha = {c: (1e-3 * torch.randn(self.space.z_shape, device=self.device))
                 .requires_grad_(True) for c in self.space.cell_types}
        opt = torch.optim.Adam(alpha.values(), lr=cfg.arch_lr,
                               betas=(cfg.arch_beta1, cfg.arch_beta2),
                               weight_decay=cfg.arch_weight_decay)
        return alpha, opt

    def log_step(self, loss: torch.Tensor) -> None:
        self.losses.append(float(loss.detach()))
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}")

    def guard(self) -> Any:
        return oom_guard(f"searching with {self.method}", batch_size=self.config.batch_size,
                         channels=self.space.channels)

    def result(self, genotype: Any, op_probs: dict[str, torch.Tensor], rule: str | None,
               extra: dict[str, Any] | None = None) -> SearchResult:
        self.bar.close()
        cost = self.meter.cost()
        log.info("%s search on %s: %.1f s, %d forward-backward passes, %d images",
                 self.method, self.task.name, cost.seconds, cost.forward_backward, cost.images)
        return SearchResult(
            method=self.method, genotype=genotype, cost=cost,
            op_probs={c: p.detach().cpu().tolist() for c, p in op_probs.items()}, rule=rule,
            task=self.task.name, space=self.space.to_dict(), config=self.config.to_dict(),
            losses=self.losses, extra=extra or {})
