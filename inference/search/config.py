"""Configuration, cost and result of an architecture search
(:mod:`pyro_base.inference.search.methods`).

Usage::

    cfg = SearchConfig.preset("cpu", steps=20)
    result = run_search("darts", task, cfg)
    result.genotype, result.cost.seconds, result.cost.forward_backward, result.cost.images
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyro_base.genotype import Genotype
from pyro_base.config import Config, ConfigError, check_float, check_int
from pyro_base.devices import check_device

RULES = ("base", "darts")
WEIGHT_POSTERIORS = ("gaussian", "delta")


def _help(text: str) -> Any:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class SearchConfig(Config):
    """Knobs of every search method; each method reads the ones it uses."""

    steps: int = field(default=50, metadata=_help("search steps (random: total budget)"))
    batch_size: int = field(default=32, metadata=_help("minibatch per step"))
    space: str = field(default="cpu", metadata=_help("SearchSpace preset: tiny, cpu, darts"))
    seed: int = field(default=0, metadata=_help("seed"))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N"))
    rule: str | None = field(default=None, metadata=_help(
        "decoding rule base|darts (default: darts for darts/snas, base for base)"))
    w_lr: float = field(default=0.025, metadata=_help("weight SGD learning rate"))
    w_lr_min: float = field(default=0.001, metadata=_help("final weight learning rate"))
    w_momentum: float = field(default=0.9, metadata=_help("weight SGD momentum"))
    w_weight_decay: float = field(default=3e-4, metadata=_help("weight decay"))
    grad_clip: float = field(default=5.0, metadata=_help("weight gradient-norm clip (0: off)"))
    arch_lr: float = field(default=3e-4, metadata=_help("Adam learning rate of alpha"))
    arch_beta1: float = field(default=0.5, metadata=_help("Adam beta1 of alpha"))
    arch_beta2: float = field(default=0.999, metadata=_help("Adam beta2 of alpha"))
    arch_weight_decay: float = field(default=1e-3, metadata=_help("weight decay of alpha"))
    tau_start: float = field(default=1.0, metadata=_help("SNAS initial temperature"))
    tau_end: float = field(default=0.3, metadata=_help(
        "SNAS final temperature (exponential); BASE's constant temperature"))
    n_candidates: int = field(default=4, metadata=_help("random search: genotypes sampled"))
    candidate_steps: int | None = field(default=None, metadata=_help(
        "random search: steps per candidate (default steps // n_candidates)"))
    base_inner_lr: float = field(default=0.01, metadata=_help("BASE inner Adam lr of theta"))
    base_arch_lr: float | None = field(default=None, metadata=_help(
        "BASE inner lr of the architecture logits (default: base_inner_lr)"))
    base_beta: float = field(default=0.01, metadata=_help("BASE KL weight beta"))
    base_init_scale: float = field(default=0.1, metadata=_help("BASE prior sigma of theta"))
    base_weight_posterior: str = field(default="gaussian", metadata=_help(
        "BASE q(theta): gaussian or delta"))

    def validate(self) -> None:
        for name in ("steps", "batch_size", "n_candidates"):
            check_int(name, getattr(self, name), low=1)
        check_int("seed", self.seed, low=0)
        if self.candidate_steps is not None:
            check_int("candidate_steps", self.candidate_steps, low=1)
        for name in ("w_lr", "arch_lr", "tau_start", "tau_end", "base_inner_lr", "base_beta",
                     "base_init_scale"):
            check_float(name, getattr(self, name), low=0.0, strict=True)
        for name in ("w_lr_min", "w_weight_decay", "grad_clip", "arch_weight_decay"):
            check_float(name, getattr(self, name), low=0.0)
        for name in ("w_momentum", "arch_beta1", "arch_beta2"):
            check_float(name, getattr(self, name), low=0.0, high=1.0)
        if self.base_arch_lr is not None:
            check_float("base_arch_lr", self.base_arch_lr, low=0.0, strict=True)
        if self.rule is not None and self.rule not in RULES:
            raise ConfigError(f"rule must be one of {RULES} or None, got {self.rule!r}")
        if self.base_weight_posterior not in WEIGHT_POSTERIORS:
            raise ConfigError(f"base_weight_posterior must be one of {WEIGHT_POSTERIORS}, got "
                             f"{self.base_weight_posterior!r}")
        if not isinstance(self.space, str):
            raise ConfigError(f"space must be a SearchSpace preset name, got {self.space!r}")
        try:
            check_device(self.device)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SearchConfig:
        """``"cpu"``: the 16x16 ``cpu`` search space, 50 steps at batch 32. ``"darts"``: the
        DARTS CIFAR-10 search (``darts`` space, batch 64, 50 epochs of 25k images = 19550
        steps). ``"tiny"``: the ``tiny`` space, for tests."""
        presets: dict[str, dict[str, Any]] = {
            "cpu": {},
            "tiny": dict(space="tiny", steps=4, batch_size=16),
            "darts": dict(space="darts", batch_size=64, steps=19550),
        }
        if name not in presets:
            raise ValueError(f"unknown search preset {name!r}; expected one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


@dataclass
class SearchCost:
    """Wall seconds, supernet forward-backward passes, forward-only passes (validation
    scoring) and images processed by all of them."""

    seconds: float = 0.0
    forward_backward: int = 0
    forward: int = 0
    images: int = 0


class CostMeter:
    """Counts passes and images from construction on; :meth:`cost` reads it."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._cost = SearchCost()

    def backward(self, n_images: int) -> None:
        self._cost.forward_backward += 1
        self._cost.images += int(n_images)

    def forward(self, n_images: int) -> None:
        self._cost.forward += 1
        self._cost.images += int(n_images)

    def cost(self) -> SearchCost:
        return replace(self._cost, seconds=time.perf_counter() - self._start)


@dataclass
class SearchResult:
    """A method's genotype, what it cost, and its final op probabilities per cell type."""

    method: str
    genotype: Genotype
    cost: SearchCost
    op_probs: dict[str, list[list[float]]]
    rule: str | None
    task: str
    space: dict[str, Any]
    config: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["genotype"] = self.genotype.to_dict()
        d["cost"] = asdict(self.cost)
        return d

    def save(self, genotype_path: str | Path, cost_path: str | Path | None = None) -> None:
        """The genotype JSON (``Genotype.save``) and everything else as a cost JSON."""
        self.genotype.save(genotype_path)
        if cost_path is not None:
            Path(cost_path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
