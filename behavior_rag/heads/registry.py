"""Heads by name: the built-in ones, those registered in Python, and those other packages
declare under the ``behavior_rag.heads`` entry point group (as simonw/llm's plugins do).

A plugin package adds a head without touching this one::

    [project.entry-points."behavior_rag.heads"]
    my_head = "my_package.heads:MyHead"

Example:
    >>> "facts" in available_heads() and "knn" in available_heads()
    True
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging

from behavior_rag.errors import ConfigError
from behavior_rag.heads.base import Head

log = logging.getLogger(__name__)

GROUP = "behavior_rag.heads"
# built in: name -> "module:Class", imported on first use (LightGBM only when asked for)
BUILTIN = {"facts": "behavior_rag.heads.gbm:FactsHead",
           "embed": "behavior_rag.heads.linear:EmbedHead",
           "knn": "behavior_rag.heads.knn:KnnHead",
           "items": "behavior_rag.heads.items:ItemHead"}
_registered: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    """Register a head class under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise ConfigError(f"{cls!r} is not a Head subclass", field="heads")
    _registered[cls.name] = cls
    return cls


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def available_heads() -> list[str]:
    """Every head name that can be asked for."""
    return sorted({*BUILTIN, *_registered, *_entry_points()})


def head_class(name: str) -> type[Head]:
    """The head class registered as ``name``."""
    if name in _registered:
        return _registered[name]
    if name in BUILTIN:
        module, attr = BUILTIN[name].split(":")
        cls = getattr(importlib.import_module(module), attr)
    elif name in (eps := _entry_points()):
        cls = eps[name].load()
    else:
        raise ConfigError(f"no head named {name!r}; available: {available_heads()}",
                          field="heads", value=name)
    if not (isinstance(cls, type) and issubclass(cls, Head)) or cls.name != name:
        raise ConfigError(f"head {name!r} does not resolve to a Head subclass named {name!r}",
                          field="heads", value=name)
    return cls
