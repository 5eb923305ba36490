"""Registries of named extension points, open to other packages by entry point (as simonw/llm's
plugins and txtai's factories are): heads, LLM backends, embedders.

Built-ins are named ``"module:attribute"`` and imported on first use (heavy dependencies load
only when asked for); :meth:`Registry.register` adds one from Python; an installed package adds
one under the registry's entry point group without touching this package::

    [project.entry-points."behavior_rag.llm_backends"]
    my_llm = "my_package.llm:make_backend"

Example:
    >>> r = Registry("behavior_rag.examples", {"path": "os.path:join"}, what="example")
    >>> r.get("path")("a", "b")
    'a/b'
    >>> r.names()
    ['path']
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from behavior_rag.errors import ConfigError


def entry_point_names(group: str) -> set[str]:
    """Names installed packages declare under ``group`` (nothing is imported)."""
    return {ep.name for ep in importlib.metadata.entry_points(group=group)}


def check_name(value: str, builtin: tuple[str, ...], group: str, what: str) -> str:
    """``value`` if it is built in or declared under ``group``; else ValueError listing them
    (settings validate names this way without importing the backends)."""
    known = {*builtin, *entry_point_names(group)}
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; available: {sorted(known)}")
    return value


class Registry:
    """Names -> objects: built in, registered in Python, or declared by entry point."""

    def __init__(self, group: str, builtin: dict[str, str], *, what: str,
                 field: str | None = None) -> None:
        self.group, self.builtin, self.what = group, dict(builtin), what
        self.field = field or what
        self._registered: dict[str, Any] = {}

    def register(self, name: str, obj: Any) -> Any:
        self._registered[name] = obj
        return obj

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted({*self.builtin, *self._registered, *self._entry_points()})

    def where(self, name: str) -> str:
        """Where a name comes from: built in, registered, or the entry point's value."""
        if name in self._registered:
            return "registered"
        if name in self.builtin:
            return "built in"
        ep = self._entry_points().get(name)
        return f"plugin {ep.value}" if ep else "unknown"

    def get(self, name: str) -> Any:
        if name in self._registered:
            return self._registered[name]
        if name in self.builtin:
            module, attr = self.builtin[name].split(":")
            return getattr(importlib.import_module(module), attr)
        ep = self._entry_points().get(name)
        if ep is None:
            raise ConfigError(f"no {self.what} named {name!r}; available: {self.names()}",
                              field=self.field, value=name)
        return ep.load()
