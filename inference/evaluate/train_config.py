"""The training recipe of a discrete genotype: :class:`TrainConfig` and its presets.

Defaults are the DARTS CIFAR-10 evaluation recipe (``train.py`` of the released code): 600
epochs at batch 96, SGD with momentum 0.9 (nesterov off), weight decay 3e-4, learning rate
0.025 cosine-annealed to 0, gradient norm clipped at 5, cutout 16, random crop (padding 4)
and flip, drop-path 0.2 (ramped linearly over training), auxiliary head weight 0.4, 36 initial
channels, 20 cells. The training loss is

    L = CE(f(x), y) + auxiliary_weight * CE(f_aux(x), y)

Usage::

    cfg = TrainConfig.preset("darts")                       # the paper recipe
    cfg = TrainConfig.preset("cpu", seed=1)                 # 16x16 procedural tasks on a CPU
    cfg = TrainConfig(steps=100, batch_size=32, init_channels=8, layers=3, auxiliary=False)

Reference: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyro_base.config import Config, ConfigError, check_float, check_int
from pyro_base.devices import check_device

__all__ = ["STEMS", "ConfigError", "TrainConfig", "check_float", "check_int"]

STEMS = ("cifar", "imagenet")


def _help(text: str) -> Any:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Every knob of :func:`pyro_base.inference.evaluate.train.train_genotype` (defaults: DARTS
    CIFAR-10).

    Exactly one of ``epochs`` and ``steps`` is set; ``steps`` counts optimizer steps (the last
    epoch may then be partial). Field metadata ``help`` is the command-line help text.
    """

    epochs: int | None = field(default=600, metadata=_help("training epochs (or --steps)"))
    steps: int | None = field(default=None, metadata=_help("optimizer steps instead of epochs"))
    batch_size: int = field(default=96, metadata=_help("training minibatch"))
    eval_batch_size: int = field(default=256, metadata=_help("test-set minibatch"))
    lr: float = field(default=0.025, metadata=_help("initial SGD learning rate"))
    lr_min: float = field(default=0.0, metadata=_help("final learning rate of the cosine"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum (nesterov off)"))
    weight_decay: float = field(default=3e-4, metadata=_help("SGD weight decay"))
    grad_clip: float = field(default=5.0, metadata=_help("gradient-norm clip (0: off)"))
    cutout: int = field(default=16, metadata=_help("cutout length in pixels (0: off)"))
    crop_padding: int = field(default=4, metadata=_help("random-crop zero padding (0: off)"))
    flip: bool = field(default=True, metadata=_help("random horizontal flip"))
    drop_path_prob: float = field(default=0.2, metadata=_help("final drop-path probability"))
    auxiliary: bool = field(default=True, metadata=_help("auxiliary head"))
    auxiliary_weight: float = field(default=0.4, metadata=_help("auxiliary loss weight"))
    init_channels: int = field(default=36, metadata=_help("initial channels C"))
    layers: int = field(default=20, metadata=_help("number of cells"))
    stem: str = field(default="cifar", metadata={"help": "cifar (3x3 conv) or imagenet (/8)",
                                                  "choices": STEMS})
    n_classes: int | None = field(default=None,
                                  metadata=_help("classifier outputs (default: the data's)"))
    in_channels: int | None = field(default=None,
                                    metadata=_help("image channels (default: the data's)"))
    seed: int = field(default=0, metadata=_help("seed of weights, batches and augmentation"))
    deterministic: bool = field(default=False,
                                metadata=_help("deterministic algorithms (exact resume)"))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N"))

    def validate(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError(f"exactly one of epochs and steps must be set, got "
                             f"epochs={self.epochs!r}, steps={self.steps!r}")
        for name in ("epochs", "steps", "n_classes", "in_channels"):
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, low=2 if name == "n_classes" else 1)
        for name in ("batch_size", "eval_batch_size", "init_channels", "layers"):
            check_int(name, getattr(self, name), low=1)
        for name in ("cutout", "crop_padding", "seed"):
            check_int(name, getattr(self, name), low=0)
        for name in ("lr", "lr_min", "weight_decay", "grad_clip", "auxiliary_weight"):
            check_float(name, getattr(self, name), low=0.0, strict=name == "lr")
        check_float("momentum", self.momentum, low=0.0, high=1.0)
        check_float("drop_path_prob", self.drop_path_prob, low=0.0, high=1.0)
        if self.lr_min > self.lr:
            raise ConfigError(f"lr_min must be <= lr, got lr_min={self.lr_min}, lr={self.lr}")
        for name in ("flip", "auxiliary", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.stem not in STEMS:
            raise ConfigError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.stem == "imagenet" and self.init_channels % 2:
            raise ConfigError(f"init_channels must be even for the imagenet stem, got "
                             f"{self.init_channels}")
        try:
            check_device(self.device)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    # -- presets and serialisation ---------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """``"darts"`` (the paper recipe) or ``"cpu"`` (16x16 procedural tasks, 12-22 s for
        a cell of one op on a laptop core: C=8, 3 cells, batch 32, 800 optimizer steps, no
        auxiliary head, no flip (it changes the class of ``relation`` tasks), no cutout, crop
        padding 2, drop-path 0.1).

        The ``cpu`` budget is counted in steps, not epochs, so that it neither stops a
        200-image task after a few dozen steps nor runs for hours on a large set. On the
        200-image procedural tasks 800 steps are 114 epochs, where test accuracy has levelled
        off; 8 epochs (56 steps) left cells near chance on ``dilated_motif`` (0.14-0.19,
        against 0.73-0.88 after 800 steps). Passing ``steps`` without ``epochs`` switches the
        budget to steps, and ``epochs`` without ``steps`` to epochs."""
        presets: dict[str, dict[str, Any]] = {
            "darts": {},
            "cpu": dict(epochs=None, steps=800, batch_size=32, init_channels=8, layers=3,
                        auxiliary=False, flip=False, cutout=0, crop_padding=2,
                        drop_path_prob=0.1),
        }
        if name not in presets:
            raise ConfigError(f"unknown training preset {name!r}; expected one of "
                             f"{sorted(presets)}")
        values = {**presets[name], **overrides}
        if overrides.get("steps") is not None and "epochs" not in overrides:
            values["epochs"] = None
        if overrides.get("epochs") is not None and "steps" not in overrides:
            values["steps"] = None
        return cls(**values)
