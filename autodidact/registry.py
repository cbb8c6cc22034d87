"""Lazy registry: ids map to ``"module:attr"`` strings imported only when made.

Kinds: ``environment``, ``suite``, ``role``, ``graph``, ``model``, ``sandbox``, ``trainer``,
``store``, ``policy`` (scripted policies), ``site`` (bundled websites). Built-ins are declared
in :mod:`autodidact.builtins`; third-party packages add theirs through the
``autodidact.plugins`` entry-point group, whose entry points are callables run once (they
call :func:`register`). Nothing heavy (torch, Playwright, vLLM, Docker) is imported until
:func:`make` or :func:`load` is asked for an id that needs it.

Example:
    >>> register("environment", "echo-v0", "examples.echo_env:EchoEnvironment", steps=3)
    >>> env = make("environment", "echo-v0", steps=5)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from typing import Any

from autodidact.errors import ConfigError, NotRegisteredError

KINDS = ("environment", "suite", "role", "graph", "model", "sandbox", "trainer", "store", "policy", "site")


@dataclass(frozen=True)
class Spec:
    """A registered entry: where it lives and the keyword defaults it is made with."""

    kind: str
    id: str
    entry_point: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """Import the entry point and return the attribute it names."""
        module_name, _, attr = self.entry_point.partition(":")
        if not attr:
            raise ConfigError(
                f"entry point {self.entry_point!r} of {self.kind} {self.id!r} must look like 'module:attr'"
            )
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(
                f"{self.kind} {self.id!r} needs module {module_name!r}, which failed to import ({e}); "
                "install the extra it belongs to (see README)"
            ) from e
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


_specs: dict[tuple[str, str], Spec] = {}
_loaded = False


def register(kind: str, id: str, entry_point: str, **defaults: Any) -> None:
    """Register ``id`` of ``kind`` at ``entry_point`` (``"module:attr"``), with keyword defaults.

    Registering an id again replaces the earlier entry (plugins may override built-ins).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown registry kind {kind!r}; use one of {', '.join(KINDS)}")
    _specs[(kind, id)] = Spec(kind, id, entry_point, dict(defaults))


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from autodidact import builtins

    builtins.register_all()
    for ep in importlib.metadata.entry_points(group="autodidact.plugins"):
        ep.load()()


def spec(kind: str, id: str) -> Spec:
    """The entry registered as ``id`` of ``kind``; a clear error names the known ids."""
    _ensure_loaded()
    try:
        return _specs[(kind, id)]
    except KeyError:
        known = ", ".join(ids(kind)) or "none"
        raise NotRegisteredError(f"unknown {kind} {id!r}; known: {known}") from None


def ids(kind: str) -> list[str]:
    """Every id registered for ``kind``, sorted."""
    _ensure_loaded()
    return sorted(i for k, i in _specs if k == kind)


def load(kind: str, id: str) -> Any:
    """Import and return the registered attribute itself (a class, function, ...)."""
    return spec(kind, id).load()


def make(kind: str, id: str, **overrides: Any) -> Any:
    """Call the registered attribute with its defaults updated by ``overrides``."""
    s = spec(kind, id)
    return s.load()(**{**s.defaults, **overrides})
