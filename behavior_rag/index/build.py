"""Sessions -> rendered text -> vectors -> index, skipping sessions whose text is unchanged.

Example:
    >>> from behavior_rag.synth import generate
    >>> meta_for(generate(1, seed=0).sessions[0], "text").has_purchase in (True, False)
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from behavior_rag.embed.base import Embedder, Progress
from behavior_rag.errors import ConfigError
from behavior_rag.facts import compute_facts
from behavior_rag.index.base import EmbedderMismatch, SessionMeta, VectorIndex, session_key
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Session, SessionFacts
from behavior_rag.vectors import HybridSpec, fact_rows


class UpsertReport(BaseModel):
    sessions: int
    embedded: int
    unchanged: int
    index_size: int


def encode(index: VectorIndex, text_vectors: np.ndarray,
           sessions: Sequence[tuple[Session, SessionFacts]]) -> np.ndarray:
    """The vectors ``index`` stores for sessions with these text vectors (and facts)."""
    if index.hybrid is None:
        return text_vectors
    return index.hybrid.join(text_vectors, fact_rows([s for s, _ in sessions],
                                                     [f for _, f in sessions]))


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
    metas, texts, changed = [], [], []
    unchanged = 0
    for s in sessions:
        facts = compute_facts(s, tz=settings.render.timezone)
        text = render(s, settings=settings, facts=facts)
        meta = meta_for(s, text, split, store_text)
        old = index.get(s.session_id)
        if old is not None and old == meta:
            unchanged += 1
            continue
        metas.append(meta)
        texts.append(text)
        changed.append((s, facts))
    if metas:
        if index.embedder.id != embedder.info.id or index.embedder.dim != embedder.info.dim:
            raise EmbedderMismatch("embedder differs from the one the index was built with",
                                   field="embedder", value=embedder.info.id)
        if settings.index.hybrid and index.hybrid is None and not len(index):
            # the first batch fixes the facts' mean and scale for the index's lifetime
            index.set_hybrid(HybridSpec.fit([s for s, _ in changed], facts=[f for _, f in
                                                                            changed],
                                            weight=settings.index.hybrid_weight))
        index.upsert(encode(index, embedder.embed(texts, progress=progress), changed), metas)
    return UpsertReport(sessions=len(sessions), embedded=len(metas), unchanged=unchanged,
                        index_size=len(index))


def rebuild(index: VectorIndex, embedder: Embedder, sessions: Sequence[Session], *,
            hybrid: HybridSpec | None, settings: Settings | None = None,
            progress: Progress | None = None) -> VectorIndex:
    """A new index of ``sessions`` (each keeping the split it has in ``index``) with vectors
    made by ``embedder`` and ``hybrid``; unchanged texts come from the embedding cache."""
    from behavior_rag.index.factory import create_index

    settings = settings or default_settings()
    new = create_index(embedder.info, settings.index, hybrid)
    by_split: dict[str | None, list[Session]] = {}
    for s in sessions:
        meta = index.get(s.session_id)
        by_split.setdefault(meta.split if meta else None, []).append(s)
    for split, group in by_split.items():
        upsert_sessions(new, embedder, group, settings=settings, split=split,
                        store_text=True, progress=progress)
    return new


def with_hybrid(index: VectorIndex, embedder: Embedder, kept: Sequence[Session],
                spec: HybridSpec, *, settings: Settings | None = None, where: str = ""
                ) -> VectorIndex:
    """``index`` with vectors made as ``spec`` says: set on an empty index (the same object),
    else a new index rebuilt from ``kept``, the indexed sessions whose events were kept
    (texts come from the embedding cache)."""
    if not len(index):
        index.set_hybrid(spec)
        return index
    if len(kept) < len(index):
        raise ConfigError(f"{len(index) - len(kept)} indexed sessions have no kept events to "
                          "rebuild hybrid vectors from: index them again", field="hybrid",
                          file=where)
    return rebuild(index, embedder, kept, hybrid=spec, settings=settings)
