"""Vector index over session embeddings: FAISS behind one Protocol, metadata beside it."""

from behavior_rag.index.base import Filter, SearchHit, SessionMeta, VectorIndex, session_key

__all__ = ["Filter", "SearchHit", "SessionMeta", "VectorIndex", "session_key"]
