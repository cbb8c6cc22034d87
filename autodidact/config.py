"""Configuration: one parser for YAML files plus ``key.sub=value`` overrides.

Configs are pydantic models (``extra="forbid"``, so a typo is an error, not a silent
default) or dataclasses (training configs subclass TRL's). :func:`parse` reads a YAML file,
applies dotted overrides whose values are parsed as YAML scalars, and validates the result.
Every failure is a :class:`~autodidact.errors.ConfigError` with a one-line message.

Example:
    >>> from pydantic import BaseModel
    >>> class C(BaseModel):
    ...     name: str = "x"
    ...     limit: int = 1
    >>> parse(C, None, ["limit=3"]).limit
    3
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from autodidact.errors import ConfigError

T = TypeVar("T")


def home() -> Path:
    """Where runs, the default store and checkpoints live: ``$AUTODIDACT_HOME`` or ``./runs``."""
    return Path(os.environ.get("AUTODIDACT_HOME", "runs"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; a missing file or non-mapping is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b=value`` override set (value parsed as YAML)."""
    out: dict[str, Any] = _deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. sampling.temperature=0.7)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def merged(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over a copy of ``defaults``; sections present in both are merged key by key."""
    out = _deepcopy(defaults)
    for k, v in given.items():
        out[k] = merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _deepcopy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def validate(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """Build ``cls`` (a pydantic model or a dataclass) from ``data``, with a one-line error."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        try:
            return cls.model_validate(dict(data))  # type: ignore[return-value]
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise ConfigError(f"{source}: {loc}: {err['msg']}") from None
    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} for {cls.__name__}")
        try:
            return cls(**_coerce_numbers(cls, data))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {e}") from None
    raise TypeError(f"{cls!r} is neither a pydantic model nor a dataclass")


def _coerce_numbers(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """YAML 1.1 reads ``2e-4`` as a string; a dataclass (unlike pydantic) would keep it one.
    Convert strings to int/float where the field's annotation takes a number and no string."""
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for key, value in data.items():
        accepted = set(typing.get_args(hints.get(key))) or {hints.get(key)}
        if not isinstance(value, str) or str in accepted:
            continue
        for kind in (int, float):
            if kind in accepted:
                try:
                    out[key] = kind(value)
                    break
                except ValueError:
                    continue
        else:
            if accepted & {int, float}:
                raise ConfigError(f"{key}: expected a number, got {value!r}")
    return out


def parse(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), **base: Any) -> T:
    """Parse ``cls`` from optional ``base`` values, a YAML file on top, then overrides on top."""
    data: dict[str, Any] = dict(base)
    if path is not None:
        data.update(read_yaml(path))
    data = apply_overrides(data, overrides)
    return validate(cls, data, source=str(path) if path else "config")
