"""A batch output read back: its manifest, its shards, and an index built from embed shards
without embedding again.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel

from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.embed.factory import resolve_backend
from behavior_rag.errors import ConfigError, StoreError, TaxonomyError
from behavior_rag.facts import compute_facts
from behavior_rag.index.build import encode, meta_for
from behavior_rag.index.factory import create_index
from behavior_rag.index.lock import WriterLock
from behavior_rag.index.storage import IndexConfig
from behavior_rag.ingest.pseudonym import UserIds
from behavior_rag.ingest.store import SessionStore, StoreManifest, open_store
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import load_taxonomy
from behavior_rag.types import Session
from behavior_rag.vectors import HybridSpec

FORMAT_VERSION = 1


class BatchManifest(BaseModel):
    """``out/manifest.json``: what the shards hold, in store order."""

    format_version: int = FORMAT_VERSION
    kind: Literal["embed", "classify"]
    store: str
    sessions: int
    shards: list[str]
    embedder: EmbedderInfo | None = None
    index: str | None = None
    created: datetime



# ---- reading the shards back ------------------------------------------------------------------
def read_manifest(out: str | Path) -> BatchManifest:
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise ConfigError("not a batch output (no manifest.json)", file=str(out), field="shards")
    return BatchManifest.model_validate_json(path.read_text())


def read_shards(out: str | Path) -> pl.DataFrame:
    """Every row of a batch output's shards, in store order."""
    man = read_manifest(out)
    files = [Path(out) / "shards" / s for s in man.shards]
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def shard_vectors(out: str | Path) -> tuple[list[str], np.ndarray]:
    """``(session ids, float32 vectors)`` of a ``batch_embed`` output, in store order."""
    man = read_manifest(out)
    if man.kind != "embed" or man.embedder is None:
        raise ConfigError("not a batch embed output", file=str(out), field="shards")
    df = read_shards(out)
    vecs = df["vector"].to_numpy().astype(np.float32) if len(df) else np.zeros((0, 1), "f4")
    return df["session_id"].to_list() if len(df) else [], vecs.reshape(-1, man.embedder.dim)


def index_from_shards(shards: str | Path, store: str | Path, index_path: str | Path,
                      settings: Settings | None = None) -> IndexConfig:
    """Build an index of ``store`` at ``index_path`` from a ``batch_embed`` output, without
    embedding again: equal to ``BehaviorRAG(settings, index_path, fresh=True)`` +
    ``index_sessions(store's sessions)`` + ``save()``.

    Example:
        >>> index_from_shards("out/emb", "data/store", "indexes/big").count   # doctest: +SKIP
        200000
    """
    settings = settings or default_settings()
    man = read_manifest(shards)
    ids, vecs = shard_vectors(shards)
    backend = resolve_backend(settings.embed.backend)
    if man.embedder is not None and man.embedder.backend != backend:
        raise ConfigError(f"the shards were embedded with backend {man.embedder.backend}, "
                          f"settings say {backend}", field="embed.backend", value=backend)
    row = {sid: i for i, sid in enumerate(ids)}
    st = open_store(store)
    missing = [i for i in st.ids() if i not in row]
    if missing:
        raise StoreError(f"{len(missing)} sessions of the store have no vector in the shards "
                         f"(e.g. {missing[:3]}): run batch embed again", file=str(shards))
    sessions = UserIds(settings).sessions(st.get_many(st.ids()))  # as BehaviorRAG stores them
    check_labels(sessions, settings)
    facts = [compute_facts(s, tz=settings.render.timezone) for s in sessions]
    metas = [meta_for(s, render(s, settings=settings, facts=f)) for s, f in zip(sessions, facts)]
    hashes = dict(read_shards(shards).select("session_id", "text_hash").iter_rows())
    if any(hashes[m.session_id] != m.text_hash for m in metas):
        raise ConfigError("the sessions render differently than when they were embedded "
                          "(other render settings, or the store changed): run batch embed "
                          "again", file=str(shards), field="render")
    index = create_index(man.embedder, settings.index)
    if sessions:  # as upsert_sessions: the first batch (all) fixes the facts' mean and scale
        if settings.index.hybrid:
            index.set_hybrid(HybridSpec.fit(sessions, facts=facts,
                                            weight=settings.index.hybrid_weight))
        text_vecs = vecs[[row[s.session_id] for s in sessions]]
        index.upsert(encode(index, text_vecs, list(zip(sessions, facts))), metas)
    # one commit, as BehaviorRAG.save: the events' segments first, then config.json names them
    with WriterLock(index_path, "behavior-rag batch (index_from_shards)",
                    settings.index.lock_timeout_s):
        events = SessionStore(Path(index_path) / "sessions", StoreManifest.empty(),
                              own_manifest=False)
        events.upsert(sessions)
        prepared = events.prepare()
        cfg = index.save(index_path, stores={"sessions": prepared})
        events.committed(prepared)
    return cfg


def check_labels(sessions: list[Session], settings: Settings) -> None:
    """Labels in the store must be in the configured taxonomy (as ``index_sessions`` asks)."""
    tax = load_taxonomy(settings.classify.taxonomy)
    for i, s in enumerate(sessions):
        if s.label is not None and s.label not in tax:
            raise TaxonomyError(f"session {s.session_id!r} has label {s.label!r}, not one of the "
                                f"taxonomy {tax.name!r} labels {list(tax.names)}", row=i + 1,
                                field=f"sessions.{i}.label", value=s.label)
