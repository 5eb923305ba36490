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

from behavior_rag.errors import ConfigError
from behavior_rag.heads.base import Head
from behavior_rag.plugins import Registry

# built in: name -> "module:Class", imported on first use (LightGBM only when asked for)
HEADS = Registry("behavior_rag.heads", {
    "facts": "behavior_rag.heads.gbm:FactsHead", "embed": "behavior_rag.heads.linear:EmbedHead",
    "knn": "behavior_rag.heads.knn:KnnHead", "items": "behavior_rag.heads.items:ItemHead",
    "forest": "behavior_rag.heads.forest:ForestHead"},
    what="head", field="heads")


def register_head(cls: type[Head]) -> type[Head]:
    """Register a head class under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise ConfigError(f"{cls!r} is not a Head subclass", field="heads")
    return HEADS.register(cls.name, cls)


def available_heads() -> list[str]:
    """Every head name that can be asked for."""
    return HEADS.names()


def head_class(name: str) -> type[Head]:
    """The head class registered as ``name``."""
    cls = HEADS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Head)) or cls.name != name:
        raise ConfigError(f"head {name!r} does not resolve to a Head subclass named {name!r}",
                          field="heads", value=name)
    return cls
