"""Content-hash embedding cache: an unchanged text is never embedded twice.

Vectors live in SQLite (raw float32 bytes, never pickle), one file per embedder id + backend,
under ``Settings.home/embed_cache``.

Example:
    >>> import numpy as np, tempfile
    >>> from behavior_rag.embed.base import EmbedderInfo
    >>> info = EmbedderInfo(id="m", dim=2, backend="torch", max_tokens=8)
    >>> c = CachedEmbedder(_Fixed(info), tempfile.mkdtemp())
    >>> c.embed(["a", "b", "a"]).shape, c.stats
    ((3, 2), {'hits': 0, 'misses': 2})
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from behavior_rag.embed.base import Embedder, EmbedderInfo, Progress, normalise


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


class CachedEmbedder:
    """Wraps an :class:`Embedder`; looks each text up by content hash before embedding it."""

    def __init__(self, inner: Embedder, cache_dir: str | Path) -> None:
        self.inner = inner
        self.info = inner.info
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{inner.info.id}__{inner.info.backend}")
        path = Path(cache_dir) / f"{name}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        self._lock = threading.Lock()
        self.stats = {"hits": 0, "misses": 0}

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None,
              progress: Progress | None = None) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
                chunk = list(set(keys[i: i + 500]))
                q = f"SELECT k, v FROM vec WHERE k IN ({','.join('?' * len(chunk))})"
                for k, v in self._db.execute(q, chunk):
                    arr = np.frombuffer(v, dtype=np.float32)
                    if arr.shape == (self.info.dim,):
                        found[k] = arr
        todo: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in found:
                todo.setdefault(k, t)
        self.stats["hits"] += sum(1 for k in keys if k in found)
        self.stats["misses"] += len(todo)
        if todo:
            vecs = self.inner.embed(list(todo.values()), batch_size=batch_size, progress=progress)
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?)",
                                     [(k, v.astype(np.float32).tobytes())
                                      for k, v in zip(todo, vecs)])
            found.update(zip(todo, vecs))
        elif progress:
            progress(len(texts), len(texts))
        if not texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


class _Fixed:
    """A deterministic toy embedder for this module's doctest only."""

    def __init__(self, info: EmbedderInfo) -> None:
        self.info = info

    def embed(self, texts, *, batch_size=None, progress=None):
        return normalise(np.array([[len(t) + 1.0, 1.0] for t in texts]))
