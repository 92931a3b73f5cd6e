"""The optimisation loop of :func:`~pyro_base.inference.evaluate.train.train_genotype`.

A :class:`TrainLoop` holds what the loop needs (network, train split, optimizer and cosine
schedule, augmentation, step budget) and runs epochs of SGD steps until the budget is spent::

    L = CE(f(x), y) + w_aux CE(f_aux(x), y),   drop-path p_e = p * e / epochs at epoch e.

Batches and augmentation draw from a per-epoch generator seeded by ``(seed, epoch)``. With a
``run_dir`` an atomic ``checkpoint.pt`` (model, optimizer, scheduler, RNG states, the loop
state) is written after every epoch; :meth:`TrainLoop.start` restores it, after checking that
the config (device aside) and the run's metadata match, so in deterministic mode a resumed
run equals an uninterrupted one. The loop state is a dict: ``epoch``, ``step``, ``seconds``,
``train_losses`` (per epoch) and ``step_losses``.

Usage::

    loop = TrainLoop.build(net, config, xs, ys, meta={"task": "motif-0"}, run_dir=run_dir)
    state, resumed_at = loop.start(resume=True)      # fresh, or the checkpoint's
    state = loop.run(state, progress=True, callback=None)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyro_base.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from pyro_base.inference.evaluate.train_config import TrainConfig
from pyro_base.network import Network
from pyro_base.tasks.transforms import Augment
from pyro_base.training import (
    epoch_generator,
    sgd_cosine,
    shuffled_batches,
    steps_per_epoch,
    weight_step,
)

__all__ = ["CHECKPOINT", "TrainLoop", "load_state", "save_state"]

CHECKPOINT = "checkpoint.pt"
_STATE_KEYS = ("epoch", "step", "seconds", "train_losses", "step_losses")


@dataclass
class TrainLoop:
    """The SGD loop over ``(xs, ys)`` (on the network's device) for ``total`` steps."""

    net: Network
    config: TrainConfig
    xs: torch.Tensor
    ys: torch.Tensor
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: Any
    aug: Augment
    total: int
    n_epochs: int
    meta: dict[str, Any]
    run_dir: Path | None = None

    @classmethod
    def build(cls, net: Network, config: TrainConfig, xs: torch.Tensor, ys: torch.Tensor, *,
              meta: dict[str, Any], run_dir: Path | None = None) -> TrainLoop:
        """The loop of ``config``'s recipe: ``config.steps`` steps, else ``config.epochs``
        epochs; ``meta`` must match on resume."""
        spe = steps_per_epoch(len(xs), config.batch_size)
        total = config.steps if config.steps is not None else config.epochs * spe
        params = list(net.parameters())
        aug = Augment(crop_padding=config.crop_padding, flip=config.flip, cutout=config.cutout)
        opt, sched = sgd_cosine(params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, total_steps=total,
                                lr_min=config.lr_min)
        return cls(net=net, config=config, xs=xs, ys=ys, params=params, opt=opt, sched=sched,
                   aug=aug, total=total, n_epochs=math.ceil(total / spe), meta=meta,
                   run_dir=run_dir)

    def start(self, resume: bool) -> tuple[dict[str, Any], int | None]:
        """The initial loop state and the epoch it resumed at: the checkpoint's with ``resume``
        and a checkpoint in ``run_dir``, else a fresh one (``None``)."""
        state: dict[str, Any] = {"epoch": 0, "step": 0, "seconds": 0.0, "train_losses": [],
                                 "step_losses": []}
        path = None if self.run_dir is None else self.run_dir / CHECKPOINT
        if resume and path is not None and path.exists():
            state = load_state(path, self.config, self.meta, self.net, self.opt, self.sched)
            return state, state["epoch"]
        return state, None

    def run(self, state: dict[str, Any], *, progress: bool = True,
            callback: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Epochs until ``state["step"]`` reaches the budget; after each, the checkpoint
        (with a ``run_dir``) and ``callback(epoch, state copy)``. Updates ``state`` in place."""
        bar = tqdm(total=self.total, initial=state["step"], disable=not progress, desc="train",
                   dynamic_ncols=True)
        started = time.perf_counter()
        while state["step"] < self.total:
            losses = self._epoch(state, bar)
            state["epoch"] += 1
            state["step_losses"] += losses
            state["train_losses"].append(sum(losses) / max(1, len(losses)))
            now = time.perf_counter()
            state["seconds"] += now - started
            started = now
            if self.run_dir is not None:
                save_state(self.run_dir / CHECKPOINT, state, self.config, self.meta, self.net,
                           self.opt, self.sched)
            if callback is not None:
                callback(state["epoch"], dict(state))
        bar.close()
        return state

    def _epoch(self, state: dict[str, Any], bar: tqdm) -> list[float]:
        """One epoch's steps (fewer when the budget ends first); their losses."""
        config, net = self.config, self.net
        gen = epoch_generator(config.seed, state["epoch"])
        net.train()
        net.drop_path_prob = config.drop_path_prob * state["epoch"] / self.n_epochs
        losses: list[float] = []
        for idx in shuffled_batches(len(self.xs), config.batch_size, gen):
            if state["step"] >= self.total:
                break
            idx = idx.to(self.xs.device)
            xb = self.aug(self.xs[idx], gen)
            logits, logits_aux = net(xb)
            loss = F.cross_entropy(logits, self.ys[idx])
            if logits_aux is not None and config.auxiliary_weight > 0:
                loss = loss + config.auxiliary_weight * F.cross_entropy(logits_aux, self.ys[idx])
            weight_step(loss, self.params, self.opt, grad_clip=config.grad_clip)
            self.sched.step()
            state["step"] += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}", epoch=state["epoch"])
        return losses


def save_state(path: Path, state: dict[str, Any], config: TrainConfig, meta: dict[str, Any],
               net: Network, opt: torch.optim.Optimizer, sched: Any) -> None:
    """Write the loop state with model, optimizer, scheduler and RNG states to ``path``."""
    save_checkpoint(path, {**state, "kind": "train_genotype", "config": config.to_dict(),
                           "meta": meta, "model": net.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "rng": rng_state()}, space=None)


def load_state(path: Path, config: TrainConfig, meta: dict[str, Any], net: Network,
               opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
    """Restore ``net``, ``opt``, ``sched`` and the RNG states from ``path``; the loop state.

    :raises ValueError: not a train_genotype checkpoint, or one trained with other settings.
    """
    ckpt = load_checkpoint(path, map_location="cpu")   # RNG states must stay on the CPU
    if ckpt.get("kind") != "train_genotype":
        raise ValueError(f"{path} is not a train_genotype checkpoint")
    saved = {k: v for k, v in ckpt["config"].items() if k != "device"}
    diff = {k: (v, config.to_dict()[k]) for k, v in saved.items() if config.to_dict()[k] != v}
    diff.update({k: (v, meta[k]) for k, v in ckpt["meta"].items() if meta[k] != v})
    if diff:
        raise ValueError(f"cannot resume {path}: it was trained with different settings "
                         f"(checkpoint, now): {diff}")
    net.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return {k: ckpt[k] for k in _STATE_KEYS}
