"""Embed rendered session text into normalised float32 vectors (one Protocol, backends per module)."""

from behavior_rag.embed.base import Embedder, EmbedderInfo
from behavior_rag.embed.factory import get_embedder

__all__ = ["Embedder", "EmbedderInfo", "get_embedder"]
