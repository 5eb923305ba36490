"""Session-level aggregates by source: what each source declares its ``Session.aggregates`` to
be (name and kind, :class:`~behavior_rag.types.DeclaredAggregate`), looked up by the sessions'
``source``. Heads build their columns from these declarations, never from one dataset's column
lists, so a new source with aggregates needs no change to any head.

Built in: ``uci`` (:data:`behavior_rag.ingest.uci.AGGREGATES`, imported on first use). A source
added in Python calls :func:`register_aggregates`; an installed package declares one under the
``behavior_rag.aggregates`` entry point group (a sequence of DeclaredAggregate or dicts)::

    [project.entry-points."behavior_rag.aggregates"]
    my_shop = "my_package.sources:AGGREGATES"

Aggregates no source declares are still read: text and yes/no values as categories, numbers
as quantities.

Example:
    >>> [a.name for a in source_aggregates("uci")][:3]
    ['Administrative', 'Informational', 'ProductRelated']
    >>> source_aggregates("taobao"), source_aggregates(None)
    ((), ())
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from behavior_rag.errors import ConfigError
from behavior_rag.plugins import Registry
from behavior_rag.types import DeclaredAggregate, Session

SOURCES = Registry("behavior_rag.aggregates", {"uci": "behavior_rag.ingest.uci:AGGREGATES"},
                   what="source with declared aggregates", field="source")


def _checked(source: str, aggregates: Iterable) -> tuple[DeclaredAggregate, ...]:
    try:
        out = tuple(a if isinstance(a, DeclaredAggregate) else DeclaredAggregate.model_validate(a)
                    for a in aggregates)
    except (ValidationError, TypeError) as e:
        raise ConfigError(f"source {source!r} declares an aggregate that is not a name and "
                          f"kind: {str(e).splitlines()[0]}", field="aggregates",
                          value=source) from None
    names = [a.name for a in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"source {source!r} declares aggregate(s) {twice} more than once",
                          field="aggregates", value=source)
    return out


def register_aggregates(source: str, aggregates: Sequence[DeclaredAggregate]
                        ) -> tuple[DeclaredAggregate, ...]:
    """Declare ``source``'s session-level aggregates (replaces an earlier declaration).

    Example:
        >>> register_aggregates("doc_shop", [DeclaredAggregate(name="basket", kind="numeric")])
        (DeclaredAggregate(name='basket', kind='numeric'),)
    """
    return SOURCES.register(source, _checked(source, aggregates))


def source_aggregates(source: str | None) -> tuple[DeclaredAggregate, ...]:
    """What ``source`` declares (``()``: no source, or one that declares nothing)."""
    if source is None or source not in SOURCES.names():
        return ()
    return _checked(source, SOURCES.get(source))


def declared_aggregates(sessions: Iterable[Session]) -> list[DeclaredAggregate]:
    """The declarations of every source among ``sessions``, sources in name order, each in
    its own order; a name two sources declare with different kinds is a ConfigError.

    Example:
        >>> s = Session(session_id="s", user_id="u", source="uci", aggregates={"Browser": 2})
        >>> declared_aggregates([s])[4]
        DeclaredAggregate(name='Browser', kind='categorical')
    """
    out: dict[str, tuple[str, DeclaredAggregate]] = {}
    for source in sorted({s.source for s in sessions if s.source is not None}):
        for a in source_aggregates(source):
            if a.name in out and out[a.name][1].kind != a.kind:
                raise ConfigError(
                    f"aggregate {a.name!r} is {out[a.name][1].kind} in source "
                    f"{out[a.name][0]!r} but {a.kind} in source {source!r}",
                    field=f"aggregates.{a.name}", value=source)
            out.setdefault(a.name, (source, a))
    return [a for _, a in out.values()]
