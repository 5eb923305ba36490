"""Sessions -> rendered text -> vectors -> index, skipping sessions whose text is unchanged.

Example:
    >>> from behavior_rag.synth import generate
    >>> meta_for(generate(1, seed=0).sessions[0], "text").has_purchase in (True, False)
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import BaseModel

from behavior_rag.embed.base import Embedder, Progress
from behavior_rag.index.base import EmbedderMismatch, SessionMeta, VectorIndex, session_key
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Session


class UpsertReport(BaseModel):
    sessions: int
    embedded: int
    unchanged: int
    index_size: int


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def meta_for(session: Session, text: str, split: str | None = None,
             store_text: bool = True) -> SessionMeta:
    cats = sorted({e.category for e in session.events if e.category is not None})
    return SessionMeta(
        id=session_key(session.session_id), session_id=session.session_id,
        user_id=session.user_id, label=session.label, start=session.start, end=session.end,
        categories=cats, has_purchase=any(e.type == "purchase" for e in session.events),
        n_events=session.n_events, split=split, text_hash=text_hash(text),
        text=text if store_text else None)


def upsert_sessions(index: VectorIndex, embedder: Embedder, sessions: Sequence[Session],
                    *, settings: Settings | None = None, split: str | None = None,
                    store_text: bool = True, progress: Progress | None = None) -> UpsertReport:
    """Render, embed and upsert ``sessions``; an unchanged session (same text, same label) costs
    only its rendering."""
    settings = settings or default_settings()
    metas, texts = [], []
    unchanged = 0
    for s in sessions:
        text = render(s, settings=settings)
        meta = meta_for(s, text, split, store_text)
        old = index.get(s.session_id)
        if old is not None and old == meta:
            unchanged += 1
            continue
        metas.append(meta)
        texts.append(text)
    if metas:
        if index.embedder.id != embedder.info.id or index.dim != embedder.info.dim:
            raise EmbedderMismatch("embedder differs from the one the index was built with",
                                   field="embedder", value=embedder.info.id)
        vecs = embedder.embed(texts, progress=progress)
        index.upsert(vecs, metas)
    return UpsertReport(sessions=len(sessions), embedded=len(metas), unchanged=unchanged,
                        index_size=len(index))
