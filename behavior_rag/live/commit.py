"""Ended live sessions into the index folder, by its normal atomic commit.

Ended sessions are committed in batches (``live.commit_every_s`` / ``live.commit_max``): each
commit rewrites the folder's ``config.json`` and the index files, so one per event or per
session would cost the service far more than the appends. A live session whose id is already
stored (the shopper came back after the gap, and the client kept its session id) is merged
with the stored one when both are the same shopper's: its earlier events are kept, equal
events once (another shopper's session of that id is replaced, as an upsert replaces).

``live.on_end``: ``index`` upserts them like ``POST /v1/sessions`` (rendered, embedded — the
embedding is done before the write lock is taken, so reads wait only for the save);
``history`` records them as earlier sessions only (``BehaviorRAG.add_history``).

Example:
    >>> from behavior_rag.synth import generate
    >>> s = generate(1, seed=2).sessions[0]
    >>> a = s.model_copy(update={"events": s.events[:2]})
    >>> b = s.model_copy(update={"events": s.events[1:3]})
    >>> merge([b], [a])[0].n_events == min(3, s.n_events)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from behavior_rag.api import BehaviorRAG
from behavior_rag.embed.cache import CachedEmbedder
from behavior_rag.facts import compute_facts
from behavior_rag.render import render
from behavior_rag.types import Session

Commit = Callable[[list[Session]], None]


def merge(live: Sequence[Session], stored: Sequence[Session]) -> list[Session]:
    """One session per id: a stored one of the same user, with each live one's events added
    (equal events once, in time order); otherwise the live one."""
    out: dict[str, Session] = {s.session_id: s for s in stored}
    for s in live:
        old = out.get(s.session_id)
        if old is None or old.user_id != s.user_id:  # another shopper's: replaced, as an
            out[s.session_id] = s                     # upsert by id replaces
            continue
        seen = {e.model_dump_json(exclude={"session_id"}) for e in old.events}
        more = [e for e in s.events if e.model_dump_json(exclude={"session_id"}) not in seen]
        events = sorted([*old.events, *more], key=lambda e: e.timestamp)  # stable
        out[s.session_id] = old.model_copy(update={"events": events})
    return [out[i] for i in dict.fromkeys(s.session_id for s in live)]


def committer(rag: BehaviorRAG, on_end: str,
              write: Callable[[], AbstractContextManager] = nullcontext,
              read: Callable[[], AbstractContextManager] = nullcontext) -> Commit:
    """The commit of ended sessions for ``rag`` (``write``/``read``: the service's index lock).

    Example:
        >>> commit = committer(rag, "index", state.lock.write, state.lock.read)  # doctest: +SKIP
        >>> commit(ended_sessions)                                          # doctest: +SKIP
    """
    def commit(sessions: list[Session]) -> None:
        if not sessions:
            return
        store = rag.sessions if on_end == "index" else rag.recorded
        if on_end == "index":
            with read():
                first = merge(sessions, store.get_many([s.session_id for s in sessions]))
            _warm(rag, first)
        with write():
            merged = merge(sessions, store.get_many([s.session_id for s in sessions]))
            if on_end == "index":
                rag.index_sessions(merged)
            else:
                rag.add_history(merged)
            rag.save()

    return commit


def _warm(rag: BehaviorRAG, sessions: list[Session]) -> None:
    """Embed the sessions' texts now, outside the write lock: the upsert then finds them in
    the embedding cache (a text another run embedded is not embedded again)."""
    if not isinstance(rag.embedder, CachedEmbedder):
        return  # it would be embedded twice
    tz = rag.settings.render.timezone
    texts = [render(s, settings=rag.settings, facts=compute_facts(s, tz=tz)) for s in sessions]
    rag.embedder.embed(texts)
