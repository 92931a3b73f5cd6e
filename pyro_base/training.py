"""Training-loop pieces shared by :mod:`pyro_base.inference.evaluate.train` and the search
baselines.

* :func:`resolve_device`, :func:`deterministic_mode`: where and how reproducibly to run.
* :func:`sgd_cosine`: DARTS' weight optimizer, SGD with momentum (nesterov off) and weight
  decay, its learning rate annealed per step as
  ``lr_t = lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2``.
* :func:`shuffled_batches`: minibatch indices from a private ``torch.Generator`` (so a resumed
  run draws the same batches without touching the global RNG).
* :func:`weight_step`: one clipped optimizer step; :func:`evaluate_logits`: top-k accuracy.
* :func:`oom_guard`: CUDA out-of-memory turned into an actionable :class:`OutOfMemory`.

Augmentation (crop, flip, cutout) is :class:`pyro_base.tasks.transforms.Augment`.

Reference: Liu, Simonyan, Yang, "DARTS", ICLR 2019 (``train.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pyro_base.devices import DEVICES, check_device  # noqa: E402,F401  (re-exported)

log = logging.getLogger(__name__)



class OutOfMemory(RuntimeError):
    """The accelerator ran out of memory; the message says which knob to turn down."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; asking for absent CUDA fails."""
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` inside the block only."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    before_bench = torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
        torch.backends.cudnn.benchmark = before_bench


def oom_message(what: str, **knobs: object) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in knobs.items())
    hint = []
    if "batch_size" in knobs:
        hint.append(f"a smaller --batch-size (e.g. {max(1, int(knobs['batch_size']) // 2)})")
    if "init_channels" in knobs or "channels" in knobs:
        hint.append("fewer channels (--init-channels)")
    if "layers" in knobs:
        hint.append("fewer --layers")
    return (f"out of GPU memory while {what} ({settings}); try "
            f"{' or '.join(hint) or 'a smaller problem'}, or --device cpu")


@contextlib.contextmanager
def oom_guard(what: str, **knobs: object) -> Iterator[None]:
    """Re-raise ``torch.cuda.OutOfMemoryError`` as :class:`OutOfMemory` with a hint.

    Usage::

        with oom_guard("training", batch_size=96, init_channels=36, layers=20):
            loss.backward()
    """
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(oom_message(what, **knobs)) from e


def sgd_cosine(params: Iterator[nn.Parameter] | list, *, lr: float, momentum: float,
               weight_decay: float, total_steps: int, lr_min: float = 0.0,
               ) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """DARTS' weight optimizer and its cosine schedule, stepped once per optimizer step."""
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          nesterov=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps),
                                                       eta_min=lr_min)
    return opt, sched


def weight_step(loss: torch.Tensor, params: list[nn.Parameter], opt: torch.optim.Optimizer,
                *, grad_clip: float | None) -> None:
    """``zero_grad``, backward, clip the global gradient norm to ``grad_clip``, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator,
                     ) -> list[torch.Tensor]:
    """One epoch of minibatch indices; a last batch of one image is dropped (BatchNorm)."""
    perm = torch.randperm(n, generator=generator)
    batches = list(torch.split(perm, batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 or full == 0 else 0)


def infinite_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
                     generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless reshuffled minibatches of ``(x, y)`` (for step-budgeted searches)."""
    while True:
        for idx in shuffled_batches(len(x), min(batch_size, len(x)), generator):
            idx = idx.to(x.device)
            yield x[idx], y[idx]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The private generator of one epoch: a pure function of ``(seed, epoch)``."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


@torch.no_grad()
def evaluate_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, *, batch_size: int = 256, topk: tuple[int, ...] = (1,),
                    ) -> dict[str, float]:
    """Mean cross-entropy and top-k accuracies of ``forward`` (logits) on ``(x, y)``."""
    total, loss = 0, 0.0
    hits = dict.fromkeys(topk, 0)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = forward(xb)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        ranked = logits.topk(max(topk), dim=-1).indices
        for k in topk:
            hits[k] += int((ranked[:, :k] == yb[:, None]).any(-1).sum())
        total += len(xb)
    out = {"loss": loss / total}
    out.update({f"top{k}": hits[k] / total for k in topk})
    if not math.isfinite(out["loss"]):
        log.warning("non-finite evaluation loss")
    return out
