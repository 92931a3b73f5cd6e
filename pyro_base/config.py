"""One configuration system for every command: frozen, keyword-only, validated dataclasses with
YAML in and out, and their flags generated from the fields (:mod:`pyro_base.cli`).

A config is ``@dataclass(frozen=True, kw_only=True)`` deriving from :class:`Config`; each field
is an :func:`option` carrying its help text and, for string choices, the allowed values, which
``--help`` shows. :class:`Config` gives ``to_dict``, ``replace``, ``to_yaml`` (atomic) and
``from_dict`` / ``from_yaml`` (unknown keys and bad values are a :class:`ConfigError` naming the
file), and checks every field's type and choices before the config's own ``validate``.

Usage::

    @dataclass(frozen=True, kw_only=True)
    class MyConfig(Config):
        steps: int = option(60, "meta-steps")
        mode: str = option("reptile", "meta-update", choices=("reptile", "maml"))

        def validate(self) -> None:
            check_int("steps", self.steps, low=1)

    cfg = MyConfig.from_yaml("run.yaml", steps=10)     # flags override the file
    cfg.to_yaml("run/config.yaml")

Settings files are read with :func:`load_yaml`: YAML's safe loader, except that ``1e-3`` is
the float it looks like (YAML 1.2), where PyYAML's YAML 1.1 rules read it as a string.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C", bound="Config")


class _Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2's floats: a mantissa without a dot (``1e-3``, ``3E5``)
    and an exponent without a sign (``1.0e3``) are floats."""


_Loader.add_implicit_resolver(  # copies SafeLoader's resolvers first: SafeLoader is untouched
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"""),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``text`` parsed as YAML by the safe loader, ``1e-3`` read as a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


class ConfigError(ValueError):
    """An invalid configuration value or file; the message names the field or the file."""


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    """A config field with its help text (and allowed values) for ``--help``."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


def check_int(name: str, value: Any, *, low: int, high: int | None = None) -> None:
    """``value`` is an int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be an int {bound}, got {value!r}")


def check_float(name: str, value: Any, *, low: float, high: float | None = None,
                strict: bool = False) -> None:
    """``value`` is a finite number ``>= low`` (``> low`` if ``strict``) and ``< high``."""
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value > low if strict else value >= low)
          and (high is None or value < high))
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        raise ConfigError(f"{name} must be a finite number {bound}"
                          + (f" and < {high}" if high is not None else "") + f", got {value!r}")


def check_type(name: str, value: Any, hint: Any) -> None:
    """Strict runtime check of the simple annotations configs use (no int for a bool, etc.)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for opt in typing.get_args(hint):
            try:
                check_type(name, value, opt)
                return
            except ConfigError:
                continue
        raise ConfigError(f"{name} has the wrong type: got {value!r} "
                          f"({type(value).__name__}), expected {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{name} must be null, got {value!r}")
        return
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        item = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        for v in value:
            if item is not Any and item is not Ellipsis:
                check_type(name, v, item)
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return
    if hint is Any:
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


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML's safe dumper has no tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def read_settings(path: str | os.PathLike, cls: type) -> dict[str, Any]:
    """The settings of a YAML file for config class ``cls`` (``kebab-case`` keys accepted);
    a missing or unreadable file, a non-mapping or an unknown key is a :class:`ConfigError`
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings")
    data = {k.replace("-", "_") if isinstance(k, str) else k: v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; known keys: {sorted(known)}")
    return data


class Config:
    """Base of the frozen, keyword-only config dataclasses (see the module docstring)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            check_type(f.name, value, hints[f.name])
            choices = f.metadata.get("choices")
            if choices is not None and value is not None and value not in choices:
                raise ConfigError(f"{f.name} must be one of {choices}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Checks across fields (ranges, combinations); raise :class:`ConfigError`."""

    # -- I/O ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_yaml(self, path: str | os.PathLike) -> Path:
        """Write the settings as YAML (atomically: a temporary file renamed over ``path``)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls: type[C], d: Any, *, source: str = "config") -> C:
        """Build from a mapping; unknown keys and invalid values name ``source``."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**d)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike, **overrides: Any) -> C:
        """Settings from a YAML file (``kebab-case`` keys accepted), then ``overrides``."""
        return cls.from_dict({**read_settings(path, cls), **overrides}, source=str(path))
