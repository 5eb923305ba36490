"""Make or open a :class:`~behavior_rag.index.base.VectorIndex`: the one place that names the
backend (FAISS: flat, HNSW or IVF by size, optional SQ8, GPU search copy when present).

Example:
    >>> from behavior_rag.embed.base import EmbedderInfo
    >>> ix = create_index(EmbedderInfo(id="demo", dim=3, backend="torch", max_tokens=8))
    >>> len(ix), ix.dim
    (0, 3)
"""

from __future__ import annotations

from pathlib import Path

from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.index.base import VectorIndex
from behavior_rag.index.faiss_index import FaissSessionIndex
from behavior_rag.settings import IndexSettings
from behavior_rag.vectors import HybridSpec


def create_index(embedder: EmbedderInfo, spec: IndexSettings | None = None,
                 hybrid: HybridSpec | None = None) -> VectorIndex:
    """An empty index for vectors of ``embedder`` (joined with facts as ``hybrid`` says)."""
    return FaissSessionIndex(embedder, spec, hybrid)


def open_index(path: str | Path, *, expect: EmbedderInfo | None = None,
               spec: IndexSettings | None = None) -> VectorIndex:
    """The index saved at ``path``; refused (:class:`EmbedderMismatch`) if ``expect`` names
    another model or dimension than it was built with."""
    return FaissSessionIndex.load(path, expect=expect, spec=spec)
