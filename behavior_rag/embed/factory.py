"""Pick the embedder from :class:`Settings` (``embed.backend``), wrapped in the content cache.

Example:
    >>> from behavior_rag.settings import Settings
    >>> emb = get_embedder(Settings(embed={"backend": "onnx-int8"}))   # doctest: +SKIP
"""

from __future__ import annotations

from functools import lru_cache

from behavior_rag.embed.base import Embedder
from behavior_rag.embed.cache import CachedEmbedder
from behavior_rag.settings import Settings, default_settings


def get_embedder(settings: Settings | None = None, *, cache: bool = True) -> Embedder:
    """The configured embedder (loaded once per process and configuration)."""
    s = settings or default_settings()
    inner = _load(s.embed.model, s.embed.backend, str(s.home))
    if not cache:
        return inner
    return _cached(s.embed.model, s.embed.backend, str(s.home))


@lru_cache(maxsize=4)
def _load(model: str, backend: str, home: str) -> Embedder:
    if backend == "torch":
        from behavior_rag.embed.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model)
    from pathlib import Path

    from behavior_rag.embed.onnx import OnnxEmbedder

    return OnnxEmbedder(model, quantized=backend == "onnx-int8", cache_root=Path(home) / "models")


@lru_cache(maxsize=4)
def _cached(model: str, backend: str, home: str) -> Embedder:
    from pathlib import Path

    return CachedEmbedder(_load(model, backend, home), Path(home) / "embed_cache")
