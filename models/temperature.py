"""Temperature schedules ``tau(step)`` for the relaxed architecture sites.

SNAS anneals the Gumbel-softmax temperature from 1.0 towards 0.03-0.3; BASE leaves it open. Our
default (``scripts/meta_svi.py``) is :class:`ExponentialTemperature` from 1.0 with a floor of
0.5 (see README).

Usage::

    schedule = make_schedule("exponential", start=1.0, end=0.3, steps=100)
    tau = schedule(step)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class ConstantTemperature:
    value: float = 1.0

    def __post_init__(self) -> None:
        _positive("temperature", self.value)

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True, kw_only=True)
class _Annealed:
    start: float = 1.0
    end: float = 0.3
    steps: int = 100

    def __post_init__(self) -> None:
        _positive("temperature start", self.start)
        _positive("temperature end", self.end)
        if self.steps < 1:
            raise ValueError(f"temperature steps must be >= 1, got {self.steps}")

    def fraction(self, step: int) -> float:
        return min(max(step, 0) / self.steps, 1.0)


@dataclass(frozen=True, kw_only=True)
class LinearTemperature(_Annealed):
    """``start -> end`` linearly over ``steps``, then ``end`` (the floor)."""

    def __call__(self, step: int) -> float:
        return self.start + (self.end - self.start) * self.fraction(step)


@dataclass(frozen=True, kw_only=True)
class ExponentialTemperature(_Annealed):
    """``start * (end / start) ** (step / steps)``, floored at ``end``."""

    def __call__(self, step: int) -> float:
        return self.start * (self.end / self.start) ** self.fraction(step)


TemperatureSchedule = ConstantTemperature | LinearTemperature | ExponentialTemperature


def make_schedule(kind: str, *, start: float = 1.0, end: float = 0.3,
                  steps: int = 100) -> TemperatureSchedule:
    """``"constant"`` (uses ``start``), ``"linear"`` or ``"exponential"``."""
    if kind == "constant":
        return ConstantTemperature(value=start)
    if kind == "linear":
        return LinearTemperature(start=start, end=end, steps=steps)
    if kind == "exponential":
        return ExponentialTemperature(start=start, end=end, steps=steps)
    raise ValueError(f"unknown temperature schedule {kind!r}; expected constant, linear or "
                     "exponential")
