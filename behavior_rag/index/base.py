"""The VectorIndex seam and the types that cross it.

Ids are stable 64-bit integers derived from session ids (:func:`session_key`): upserting a
session replaces its vector under the same id, deleting removes it, other ids never shift.

Example:
    >>> session_key("s_1") == session_key("s_1") > 0
    True
    >>> Filter(labelled=True, exclude_users=["u_1"]).is_empty()
    False
    >>> Filter(start_from="2024-11-01T00:00").start_from.tzinfo
    datetime.timezone.utc
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import ConfigError
from behavior_rag.index.storage import Artifact, IndexConfig
from behavior_rag.ingest.store import StoreManifest
from behavior_rag.vectors import HybridSpec


class EmbedderMismatch(ConfigError):
    """The index was built with another embedding model (or dimension) than the one in use."""


def session_key(session_id: str) -> int:
    """Stable positive int64 id of a session id (first 63 bits of its SHA-256)."""
    h = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class SessionMeta(BaseModel):
    """What the index knows about each vector besides the vector."""

    model_config = ConfigDict(frozen=True)

    id: int
    session_id: str
    user_id: str
    label: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    categories: list[str] = Field(default_factory=list)
    has_purchase: bool = False
    n_events: int = 0
    split: str | None = None
    text_hash: str = Field("", description="Hash of the rendered text the vector was made from.")
    text: str | None = Field(None, description="The rendered text (kept unless the index is "
                             "built with store_text=False).")


class Filter(BaseModel):
    """Which sessions a search may return. Applied *before* scoring, so k hits come back
    whenever k sessions pass. All conditions must hold (AND); lists mean any-of."""

    model_config = ConfigDict(extra="forbid")

    labelled: bool | None = Field(None, description="True: label is not null; False: is null.")
    labels: list[str] | None = None
    categories: list[str] | None = Field(None, description="Session touches any of these.")
    start_from: datetime | None = None
    start_to: datetime | None = None
    users: list[str] | None = None
    exclude_users: list[str] = Field(default_factory=list)
    exclude_sessions: list[str] = Field(default_factory=list)
    has_purchase: bool | None = None
    split: str | None = None

    @field_validator("start_from", "start_to")
    @classmethod
    def _utc(cls, d: datetime | None) -> datetime | None:
        # Naive times mean UTC, as for events (the index stores aware UTC start times).
        return d.replace(tzinfo=timezone.utc) if d is not None and d.tzinfo is None else d

    def is_empty(self) -> bool:
        return self == Filter()


@dataclass(slots=True)
class SearchHit:
    """One result: id, inner-product score (cosine for unit vectors) and the session's metadata.

    A slotted (non-frozen: frozen doubles the build cost) dataclass, not a pydantic model, on purpose: it is built k times per query on the
    search hot path from already-validated parts, where pydantic construction cost ~10x the
    FAISS-relative budget. Public results (``retrieve.Neighbor``) are pydantic.
    """

    id: int
    score: float
    meta: SessionMeta


@runtime_checkable
class VectorIndex(Protocol):
    """Stable-id vector index with metadata and pre-filtered search, saved as a folder.

    Build one with :func:`behavior_rag.index.factory.create_index` or open a saved folder with
    :func:`behavior_rag.index.factory.open_index`; callers hold this Protocol, not a backend.
    """

    dim: int  # of the stored vectors: the embedder's, plus the facts' when hybrid
    embedder: EmbedderInfo  # the model the vectors came from (queries must use the same)
    hybrid: HybridSpec | None  # how facts are joined to the text vectors (None: text only)

    def __len__(self) -> int: ...

    def set_hybrid(self, hybrid: HybridSpec | None) -> None:
        """Choose how vectors are made (only while the index is empty)."""
        ...

    def upsert(self, vectors: np.ndarray, metas: list[SessionMeta]) -> None:
        """Add or replace (by ``meta.id``) one vector per metadata row."""
        ...

    def delete(self, ids: list[int]) -> int:
        """Remove ids; returns how many were present."""
        ...

    def search(self, queries: np.ndarray, k: int, flt: Filter | None = None
               ) -> list[list[SearchHit]]:
        """Top-k hits per query row, best first, among sessions that pass ``flt``."""
        ...

    def get(self, session_id: str) -> SessionMeta | None: ...

    def vectors(self, ids: list[int]) -> np.ndarray:
        """Stored vectors of ids (as the index holds them; SQ8 is lossy)."""
        ...

    def ids_of_user(self, user_id: str) -> list[int]:
        """Ids of every indexed session of ``user_id`` (empty if none)."""
        ...

    def metadata(self) -> pl.DataFrame:
        """Every indexed session's :class:`SessionMeta`, one row each."""
        ...

    def save(self, path: str | Path, stores: Mapping[str, StoreManifest] | None = None,
             artifacts: Mapping[str, Artifact] | None = None) -> IndexConfig:
        """Commit the index as a self-describing folder at ``path``, atomically, with the
        session stores and the fitted artifacts written in it (None: keep what the last
        commit lists)."""
        ...
