"""Train a genotype from scratch and report held-out accuracy: the evaluation of a NAS method.

A :class:`~pyro_base.network.Network` built from the genotype is trained on the task's support
(train) split with the recipe of :class:`~pyro_base.inference.evaluate.train_config.TrainConfig`
(DARTS by
default) and scored on the query (test) split: top-1 and, with more than 5 classes, top-5
accuracy, parameters in millions (auxiliary head excluded, as DARTS counts), multiply-
accumulates per image, wall seconds, and the training-loss curve. The objective per batch is

    L = CE(f(x), y) + w_aux CE(f_aux(x), y),   drop-path p_e = p * e / epochs at epoch e.

With a ``run_dir`` an atomic checkpoint (model, optimizer, scheduler, RNG states, epoch) is
written after every epoch and ``eval.json`` at the end; ``resume=True`` continues from the last
checkpoint. Batches and augmentation draw from a per-epoch generator seeded by ``(seed,
epoch)`` and drop-path from the restored global RNG, so in deterministic mode a resumed run
equals an uninterrupted one. The loop and its checkpoint are :mod:`.train_loop`.

Usage::

    from pyro_base.inference.evaluate.train import TrainConfig, train_genotype
    task = ProceduralTasks(image_size=16).task("motif", seed=0, split="test")
    result = train_genotype(get_genotype("DARTS_V2"), task, TrainConfig.preset("cpu"),
                            run_dir="runs/eval")
    result.top1, result.params_M, result.macs_M

Reference: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from pyro_base.genotype import Genotype
from pyro_base.inference.evaluate.train_config import TrainConfig
from pyro_base.inference.evaluate.train_loop import CHECKPOINT, TrainLoop
from pyro_base.network import Network, count_macs, count_parameters
from pyro_base.tasks.base import Task
from pyro_base.training import (
    OutOfMemory,
    deterministic_mode,
    evaluate_logits,
    oom_guard,
    resolve_device,
)

__all__ = ["CHECKPOINT", "EVAL_JSON", "EvalResult", "OutOfMemory", "TrainConfig",
           "build_network", "check_data_fits", "train_genotype"]

log = logging.getLogger(__name__)

EVAL_JSON = "eval.json"
Data = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class EvalResult:
    """Everything ``eval.json`` holds; ``top5`` is None with 5 classes or fewer."""

    task: str
    genotype: dict[str, Any]
    config: dict[str, Any]
    n_classes: int
    n_train: int
    n_test: int
    image_shape: list[int]
    top1: float
    top5: float | None
    test_loss: float
    params_M: float
    macs_M: float
    seconds: float
    epochs: int
    steps: int
    train_losses: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    device: str = "cpu"
    resumed_at_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def build_network(genotype: Genotype, config: TrainConfig, *, n_classes: int,
                  in_channels: int) -> Network:
    """The evaluation network of ``genotype`` with ``config``'s channels, cells and head."""
    return Network(genotype, C=config.init_channels, n_classes=n_classes, layers=config.layers,
                   auxiliary=config.auxiliary, stem=config.stem, in_channels=in_channels)


def _as_data(task_or_data: Task | Data | Mapping[str, Any]) -> tuple[str, Data, int | None]:
    if isinstance(task_or_data, Task):
        t = task_or_data
        return t.name, (t.support, t.query), t.n_classes
    if isinstance(task_or_data, Mapping):
        return "data", (tuple(task_or_data["train"]), tuple(task_or_data["test"])), None
    if isinstance(task_or_data, Sequence) and len(task_or_data) == 2:
        return "data", (tuple(task_or_data[0]), tuple(task_or_data[1])), None
    raise ValueError("task_or_data must be a Task, ((x_train, y_train), (x_test, y_test)) or "
                     f"{{'train': (x, y), 'test': (x, y)}}, got {type(task_or_data).__name__}")


def check_data_fits(net: Network, data: Data) -> None:
    """Raise a ValueError naming the mismatch when ``data`` cannot train ``net``: image
    channels, label range, image sizes the stem and reductions cannot handle."""
    n_out = net.classifier.out_features
    shapes = set()
    for split, (x, y) in zip(("train", "test"), data, strict=True):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"{split} images must be a [N, C, H, W] tensor, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.shape[1] != net.in_channels:
            raise ValueError(f"{split} images have {x.shape[1]} channels but the network expects "
                             f"in_channels={net.in_channels}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ValueError(f"{split} labels must be a non-empty int64 [N] tensor matching the "
                             f"images, got {y.dtype} {tuple(y.shape)} for {x.shape[0]} images")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_out:
            raise ValueError(f"{split} labels lie in [{lo}, {hi}] but the network has "
                             f"n_classes={n_out} outputs (labels must lie in [0, {n_out}))")
        shapes.add(tuple(x.shape[1:]))
    if len(shapes) > 1:
        raise ValueError(f"train and test images differ in shape: {sorted(shapes)}")
    h, w = data[0][0].shape[-2:]
    n_down = len(net.reductions) + (3 if net.stem_type == "imagenet" else 0)
    if min(h, w) < 2 ** n_down:
        raise ValueError(f"images of size {h}x{w} do not fit the network: its stem and "
                         f"reductions halve the resolution {n_down} times (at least "
                         f"{2 ** n_down}x{2 ** n_down} needed); use fewer layers or the cifar stem")
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(data[0][0][:1].to(next(net.parameters()).device))
    except RuntimeError as e:
        raise ValueError(f"images of size {h}x{w} do not fit the network (stem={net.stem_type}, "
                         f"reductions at cells {list(net.reductions)}): {e}") from e
    finally:
        net.train(was_training)


def _prepare_run_dir(run_dir: Path | None, resume: bool) -> Path | None:
    if run_dir is None:
        if resume:
            raise ValueError("resume=True needs a run_dir")
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (run_dir / CHECKPOINT).exists():
        raise ValueError(f"{run_dir} already holds a checkpoint; pass resume=True (--resume) to "
                         f"continue it or choose another run directory")
    return run_dir


def train_genotype(genotype: Genotype, task_or_data: Task | Data | Mapping[str, Any],
                   config: TrainConfig, *, run_dir: str | Path | None = None,
                   resume: bool = False, progress: bool = True,
                   callback: Callable[[int, dict[str, Any]], None] | None = None,
                   ) -> EvalResult:
    """Train ``genotype`` from scratch on the train (support) split, score the test (query)
    split.

    :param task_or_data: a :class:`~pyro_base.tasks.base.Task`, or
        ``((x_train, y_train), (x_test, y_test))`` (then ``n_classes`` is ``config.n_classes``
        or the largest label + 1).
    :param run_dir: where ``checkpoint.pt`` (every epoch) and ``eval.json`` go.
    :param resume: continue from ``run_dir/checkpoint.pt`` (the config must match, device
        aside); without a checkpoint training starts afresh.
    :param callback: ``callback(epoch, info)`` after each epoch's checkpoint.
    :raises ValueError: data that does not fit the network, or a mismatched resume.
    :raises OutOfMemory: the GPU ran out of memory (the message suggests what to shrink).
    """
    _check_types(genotype, config)
    name, data, task_classes = _as_data(task_or_data)
    (xs, ys), (xq, yq) = data
    n_classes = config.n_classes or task_classes or int(max(ys.max(), yq.max())) + 1
    run_dir = _prepare_run_dir(None if run_dir is None else Path(run_dir), resume)
    device = resolve_device(config.device)
    knobs = dict(batch_size=config.batch_size, init_channels=config.init_channels,
                 layers=config.layers, device=device)
    with deterministic_mode(config.deterministic), oom_guard("training a genotype", **knobs):
        pyro.set_rng_seed(config.seed)
        in_channels = config.in_channels or int(xs.shape[1])
        net = build_network(genotype, config, n_classes=n_classes, in_channels=in_channels)
        check_data_fits(net, data)
        net.to(device)
        xs, ys, xq, yq = (t.to(device) for t in (xs, ys, xq, yq))
        meta = {"task": name, "genotype": genotype.to_dict(), "n_train": len(xs),
                "n_classes": n_classes}
        loop = TrainLoop.build(net, config, xs, ys, meta=meta, run_dir=run_dir)
        state, resumed_at = loop.start(resume)
        _log_start(loop, resume=resume, resumed_at=resumed_at)
        loop.run(state, progress=progress, callback=callback)
        scores, macs = _final_scores(net, config, xq, yq, n_classes=n_classes,
                                     image_size=tuple(xs.shape[-2:]), in_channels=in_channels)
    result = EvalResult(
        task=name, genotype=meta["genotype"], config=config.to_dict(), n_classes=n_classes,
        n_train=len(xs), n_test=len(xq), image_shape=list(xs.shape[1:]), top1=scores["top1"],
        top5=scores.get("top5"), test_loss=scores["loss"], params_M=count_parameters(net),
        macs_M=macs / 1e6, seconds=state["seconds"], epochs=state["epoch"],
        steps=state["step"], train_losses=state["train_losses"],
        step_losses=state["step_losses"], device=str(device), resumed_at_epoch=resumed_at)
    if run_dir is not None:
        result.save(run_dir / EVAL_JSON)
    log.info("%s: top1 %.4f, %.3f M params, %.1f M MACs, %.1f s", name, result.top1,
             result.params_M, result.macs_M, result.seconds)
    return result


def _check_types(genotype: Genotype, config: TrainConfig) -> None:
    if not isinstance(genotype, Genotype):
        raise ValueError(f"genotype must be a Genotype, got {type(genotype).__name__}")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")


def _log_start(loop: TrainLoop, *, resume: bool, resumed_at: int | None) -> None:
    if resumed_at is not None:
        log.info("resuming %s at epoch %d / %d", loop.run_dir, resumed_at, loop.n_epochs)
    elif resume:
        log.info("no checkpoint in %s; starting afresh", loop.run_dir)


def _final_scores(net: Network, config: TrainConfig, xq: torch.Tensor, yq: torch.Tensor, *,
                  n_classes: int, image_size: tuple[int, int],
                  in_channels: int) -> tuple[dict[str, float], int]:
    """The test split's loss and top-1 (and, above 5 classes, top-5) accuracy of the trained
    ``net``, and its multiply-accumulates per image."""
    net.eval()
    topk = (1, 5) if n_classes > 5 else (1,)
    scores = evaluate_logits(lambda x: net(x)[0], xq, yq, batch_size=config.eval_batch_size,
                             topk=topk)
    return scores, count_macs(net, image_size, in_channels=in_channels)
