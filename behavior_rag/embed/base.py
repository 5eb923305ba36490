"""The Embedder seam: texts in, L2-normalised float32 vectors out.

Example:
    >>> from behavior_rag.embed import get_embedder
    >>> emb = get_embedder()                       # doctest: +SKIP
    >>> emb.embed(["viewed item 1"]).shape         # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from behavior_rag.errors import ConfigError

# Concrete backends (what an index records); settings may also say "auto" (embed/factory.py).
Backend = Literal["torch", "onnx", "onnx-int8", "openvino"]
BACKENDS: tuple[str, ...] = get_args(Backend)
Progress = Callable[[int, int], None]  # (done, total)


class MissingBackendError(ConfigError, ImportError):
    """An embedding backend's optional dependency is not installed; ``extra`` names the pip
    extra that brings it. Also an ImportError, so ``except ImportError`` callers still work.

    Example:
        >>> MissingBackendError("needs openvino: pip install 'behavior_rag[openvino]'",
        ...                     extra="openvino").context["extra"]
        'openvino'
    """


class EmbedderInfo(BaseModel):
    """What an index records about the model that made its vectors."""

    model_config = ConfigDict(frozen=True)

    id: str  # model identity, e.g. "sentence-transformers/all-MiniLM-L6-v2"
    dim: int
    backend: str = Field(min_length=1, max_length=100)  # a built-in Backend or a plugin's name
    max_tokens: int


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors, in the order given."""

    info: EmbedderInfo

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None,
              progress: Progress | None = None) -> np.ndarray:
        """``(len(texts), dim)`` float32, each row L2-normalised."""
        ...


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
