"""Similar shoppers: nearest sessions or users to a session, a session id, a user, or free text.

User vectors are the normalised mean of the user's session vectors: every session counts the
same, so a user with one long odd session and many typical ones still looks typical. (Recency
weighting would favour current intent; we keep the plain mean until there is an eval for it.)
A user query excludes that user's own sessions and returns distinct users, each with the score
and id of their best-matching session.

Example:
    >>> hits = similar(index, embedder, text="compares prices across many phone brands, never "
    ...                "buys", k=5)                                  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.embed.base import Embedder
from behavior_rag.errors import ConfigError
from behavior_rag.facts import compute_facts
from behavior_rag.index.base import Filter, SearchHit, SessionMeta, VectorIndex
from behavior_rag.index.build import encode
from behavior_rag.ingest.pseudonym import is_anonymous
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Session


class Neighbor(BaseModel):
    """A similar session (or, for user queries, a similar user via their best session)."""

    id: int
    session_id: str
    user_id: str
    score: float
    meta: SessionMeta
    text: str | None = None
    user_known: bool = Field(True, description="False when the source has no user ids: the "
                             "user is an anonymous stand-in for this one session.")


def _neighbors(hits: list[SearchHit], with_text: bool) -> list[Neighbor]:
    out = []
    for h in hits:
        meta = h.meta if with_text else h.meta.model_copy(update={"text": None})
        out.append(Neighbor(id=h.id, session_id=meta.session_id, user_id=meta.user_id,
                            score=h.score, meta=meta, text=h.meta.text if with_text else None,
                            user_known=not is_anonymous(meta.user_id)))
    return out


def user_vector(index: VectorIndex, user_id: str) -> np.ndarray:
    ids = index.ids_of_user(user_id)
    if not ids:
        raise ConfigError("user has no sessions in the index", field="user_id", value=user_id)
    v = index.vectors(ids).mean(axis=0)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def similar(index: VectorIndex, embedder: Embedder, *, session: Session | None = None,
            session_id: str | None = None, user_id: str | None = None, text: str | None = None,
            k: int = 10, flt: Filter | None = None, with_text: bool = False,
            settings: Settings | None = None) -> list[Neighbor]:
    """Nearest neighbours of exactly one of ``session``, ``session_id``, ``user_id``, ``text``.

    Session and session-id queries never return the query session itself; user queries never
    return the user's own sessions and return at most one hit per user.
    """
    given = [x is not None for x in (session, session_id, user_id, text)]
    if sum(given) != 1:
        raise ConfigError("give exactly one of session, session_id, user_id, text")
    if k < 1:
        raise ConfigError("k must be >= 1", field="k", value=k)
    flt = flt or Filter()
    settings = settings or default_settings()
    if session is not None:
        facts = compute_facts(session, tz=settings.render.timezone)
        q = encode(index, embedder.embed([render(session, settings=settings, facts=facts)]),
                   [(session, facts)])
        flt = flt.model_copy(update={"exclude_sessions": [*flt.exclude_sessions,
                                                          session.session_id]})
    elif session_id is not None:
        meta = index.get(session_id)
        if meta is None:
            raise ConfigError("session is not in the index", field="session_id", value=session_id)
        q = index.vectors([meta.id])
        flt = flt.model_copy(update={"exclude_sessions": [*flt.exclude_sessions, session_id]})
    elif text is not None:
        if not text.strip():
            raise ConfigError("query text is empty", field="text")
        q = embedder.embed([text])
        q = index.hybrid.text_only(q) if index.hybrid is not None else q
    else:
        q = user_vector(index, user_id)[None, :]
        flt = flt.model_copy(update={"exclude_users": [*flt.exclude_users, user_id]})
        return _distinct_users(index, q, k, flt, with_text)
    return _neighbors(index.search(q, k, flt)[0], with_text)


def _distinct_users(index: VectorIndex, q: np.ndarray, k: int, flt: Filter,
                    with_text: bool) -> list[Neighbor]:
    # Ask for more sessions until k distinct users are found or the index is exhausted.
    want = k * 4
    while True:
        hits = index.search(q, want, flt)[0]
        best: dict[str, SearchHit] = {}
        for h in hits:
            best.setdefault(h.meta.user_id, h)
        if len(best) >= k or len(hits) < want:
            return _neighbors(list(best.values())[:k], with_text)
        want *= 4


class Example(BaseModel):
    """A labelled neighbour shown to the LLM."""

    session_id: str
    label: str
    score: float
    text: str


def labelled_neighbors(index: VectorIndex, vector: np.ndarray, k: int, *,
                       session_id: str | None = None, user_id: str | None = None
                       ) -> list[SearchHit]:
    """k nearest labelled sessions, never the query session or the same user's sessions
    (a user's other sessions would leak their label into their own prediction)."""
    flt = Filter(labelled=True, exclude_sessions=[session_id] if session_id else [],
                 exclude_users=[user_id] if user_id else [])
    return index.search(np.atleast_2d(vector), k, flt)[0]


def balanced_examples(hits: list[SearchHit], k: int, per_label_max: int,
                      max_chars: int) -> list[Example]:
    """Best-scoring hits with at most ``per_label_max`` per label, nearest last (closest to the
    query in the prompt), each cut to its first lines within ``max_chars``."""
    if k <= 0:  # zero-shot prompt (e.g. a fine-tuned adapter's)
        return []
    counts: dict[str, int] = {}
    picked: list[SearchHit] = []
    for h in hits:
        label = h.meta.label
        if label is None or counts.get(label, 0) >= per_label_max:
            continue
        counts[label] = counts.get(label, 0) + 1
        picked.append(h)
        if len(picked) == k:
            break
    return [Example(session_id=h.meta.session_id, label=h.meta.label, score=h.score,
                    text=_cut(h.meta.text or "", max_chars)) for h in reversed(picked)]


def _cut(text: str, max_chars: int) -> str:
    out, used = [], 0
    for line in text.split("\n"):
        if out and used + len(line) > max_chars:
            out.append("...")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)
