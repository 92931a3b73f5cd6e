"""The configuration of a meta-training run: one validated dataclass, YAML in and out.

Every field is a kebab-case flag of ``scripts/meta_svi.py`` and a key of ``--config file.yaml``
(flags override the file). Validation is eager and names the field: unknown keys, wrong types
and out-of-range values (negative learning rates, zero tasks, temperature <= 0) are rejected
before anything is built.

Usage::

    cfg = MetaConfig.from_yaml("run.yaml", steps=50)   # file values, then overrides
    cfg.to_yaml(run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pyro_base import defaults


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field."""


_CHOICES: dict[str, tuple[str, ...]] = {
    "task_source": ("procedural", "digits"),
    "preset": ("cpu", "darts", "tiny"),
    "mode": ("reptile", "maml"),
    "inner_grad": ("first", "second"),
    "inner_optimizer": ("adam", "sgd"),
    "weight_posterior": ("gaussian", "delta"),
    "elbo_impl": ("pyro", "functional", "graph"),
    "relaxation": ("concrete", "straight_through"),
    "kl": ("analytic", "mc"),
    "weight_prior": ("learned", "fixed"),
    "arch_prior": ("learned", "uniform"),
    "head": ("learned", "zero"),
    "tau_schedule": ("constant", "linear", "exponential"),
    "nan_policy": ("stop", "skip"),
    "device": ("auto", "cpu", "cuda"),
}
_POSITIVE = {"inner_lr", "arch_lr", "meta_lr", "beta", "init_scale", "prior_scale",
             "tau_start", "tau_end", "adapt_temperature", "collective_timeout"}
_AT_LEAST_1 = {"steps", "tasks_per_step", "inner_batch", "n_support", "n_query", "n_heldout",
               "max_bad_steps", "checkpoint_every", "num_samples", "posterior_draws"}
_AT_LEAST_0 = {"inner_steps", "adapt_steps", "seed", "threads"}
# timedelta and torch.manual_seed overflow beyond these
_AT_MOST = {"collective_timeout": 7 * 86400, "seed": 2**32 - 1}


@dataclass(frozen=True, kw_only=True)
class MetaConfig:
    """All settings of ``scripts/meta_svi.py``; defaults are the README's measured choices."""

    # tasks
    task_source: str = "procedural"
    families: list[str] | None = None
    n_support: int = 96
    n_query: int = 96
    n_heldout: int = 5
    # search space
    preset: str = "cpu"
    channels: int | None = None
    cells: int | None = None
    nodes: int | None = None
    # model
    relaxation: str = "concrete"
    kl: str = "analytic"
    weight_prior: str = "learned"
    arch_prior: str = "learned"
    head: str = "learned"
    prior_scale: float = defaults.PRIOR_SCALE
    beta: float = defaults.BETA
    init_scale: float = defaults.INIT_SCALE
    # guide (inner loop)
    inner_steps: int = defaults.INNER_STEPS
    inner_lr: float = defaults.INNER_LR
    arch_lr: float | None = defaults.ARCH_LR
    inner_optimizer: str = "adam"
    inner_batch: int = defaults.INNER_BATCH
    weight_posterior: str = "gaussian"
    elbo_impl: str = "pyro"
    batch_tasks: bool = False
    # meta-training
    mode: str = "reptile"
    inner_grad: str = "first"
    steps: int = defaults.STEPS
    tasks_per_step: int = defaults.TASKS_PER_STEP
    meta_lr: float = defaults.META_LR
    meta_lr_final: float = defaults.META_LR_FINAL
    tau_schedule: str = "exponential"
    tau_start: float = defaults.TAU_START
    tau_end: float = defaults.TAU_END
    # adaptation to held-out tasks
    adapt_steps: int = defaults.ADAPT_STEPS
    adapt_temperature: float = defaults.ADAPT_TEMPERATURE
    num_samples: int = defaults.NUM_SAMPLES
    posterior_draws: int = 64
    # running
    device: str = "auto"
    threads: int = 1
    seed: int = 0
    deterministic: bool = False
    nan_policy: str = "stop"
    max_bad_steps: int = 3
    checkpoint_every: int = 1
    collective_timeout: float = 300.0

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {choices}, got "
                                  f"{getattr(self, name)!r}")
        for name in _POSITIVE:
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        for name in _AT_LEAST_1:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in _AT_LEAST_0:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name, top in _AT_MOST.items():
            if getattr(self, name) > top:
                raise ConfigError(f"{name} must be <= {top}, got {getattr(self, name)!r}")
        for name in ("channels", "cells", "nodes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be >= 1 or null, got {v!r}")
        if not 0 <= self.meta_lr_final <= 1:
            raise ConfigError(f"meta_lr_final must be in [0, 1], got {self.meta_lr_final!r}")
        if self.batch_tasks and (self.mode != "reptile" or self.elbo_impl == "pyro"):
            raise ConfigError(f"batch_tasks needs mode 'reptile' and elbo_impl 'functional' or "
                              f"'graph', got mode {self.mode!r}, elbo_impl {self.elbo_impl!r}")
        if self.relaxation == "straight_through" and (self.elbo_impl == "graph"
                                                       or self.batch_tasks):
            raise ConfigError("relaxation 'straight_through' computes only the sampled op per "
                              "edge, which the static inner loop of elbo_impl 'graph' and "
                              "batch_tasks cannot (it computes every op); use elbo_impl "
                              "'pyro' or 'functional' without batch_tasks")
        if self.families is not None and not self.families:
            raise ConfigError("families must be null (all) or a non-empty list")

    # -- I/O ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> MetaConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> MetaConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping of settings")
        data = {k.replace("-", "_") if isinstance(k, str) else k: v for k, v in data.items()}
        return cls.from_dict({**data, **overrides}, source=str(path))

    def replace(self, **changes: Any) -> MetaConfig:
        return dataclasses.replace(self, **changes)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Strict runtime type check for the simple annotations used by MetaConfig."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        for opt in options:
            try:
                _check_type(name, value, opt)
                return
            except ConfigError:
                continue
        raise ConfigError(f"{name} has the wrong type: got {value!r} "
                          f"({type(value).__name__}), expected {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{name} must be null, got {value!r}")
        return
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        for v in value:
            _check_type(name, v, item)
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{name} must be of type {getattr(hint, '__name__', hint)}, got "
                          f"{value!r} ({type(value).__name__})")
