"""The FAISS session index: vectors (:mod:`faiss_vectors`) + metadata + an index folder.

Example:
    >>> import numpy as np
    >>> from behavior_rag.embed.base import EmbedderInfo
    >>> from behavior_rag.index.base import SessionMeta, session_key
    >>> info = EmbedderInfo(id="demo", dim=3, backend="torch", max_tokens=8)
    >>> ix = FaissSessionIndex(info)
    >>> ix.upsert(np.eye(3, dtype="float32"),
    ...           [SessionMeta(id=session_key(s), session_id=s, user_id="u") for s in "abc"])
    >>> [h.meta.session_id for h in ix.search(np.eye(3, dtype="float32")[1:2], 1)[0]]
    ['b']
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import ConfigError, StoreError
from behavior_rag.index.base import (
    EmbedderMismatch,
    Filter,
    SearchHit,
    SessionMeta,
    VectorIndex,
)
from behavior_rag.index.faiss_vectors import FaissVectors, padded
from behavior_rag.index.metadata import MetadataStore
from behavior_rag.index.storage import (
    Artifact,
    IndexConfig,
    commit,
    data_dir,
    new_data_dir,
    read_config,
)
from behavior_rag.ingest.store import StoreManifest
from behavior_rag.settings import IndexSettings
from behavior_rag.vectors import HybridSpec


class FaissSessionIndex(VectorIndex):
    """Session vectors with stable ids, metadata and filter-before-scoring search (FAISS)."""

    def __init__(self, embedder: EmbedderInfo, spec: IndexSettings | None = None,
                 hybrid: HybridSpec | None = None) -> None:
        self.embedder = embedder
        self.hybrid = hybrid
        self.dim = embedder.dim + (hybrid.extra_dim if hybrid else 0)
        self.spec = spec or IndexSettings()
        self.vectors_ = FaissVectors(self.dim, self.spec)
        self.meta = MetadataStore()
        self.created = datetime.now(timezone.utc)
        self.path: Path | None = None

    def __len__(self) -> int:
        return len(self.vectors_)

    @property
    def kind(self) -> str:
        return self.vectors_.kind

    # ---- VectorIndex --------------------------------------------------------------------
    def set_hybrid(self, hybrid: HybridSpec | None) -> None:
        if len(self):
            raise ConfigError("an index with vectors cannot change how its vectors are made: "
                              "rebuild it (behavior-rag index reembed)", field="hybrid")
        self.hybrid = hybrid
        self.dim = self.embedder.dim + (hybrid.extra_dim if hybrid else 0)
        self.vectors_ = FaissVectors(self.dim, self.spec)

    def upsert(self, vectors: np.ndarray, metas: list[SessionMeta]) -> None:
        ids = np.array([m.id for m in metas], dtype=np.int64)
        for m in metas:
            old = self.meta.get(m.id)
            if old is not None and old.session_id != m.session_id:
                raise ConfigError("two session ids hash to the same index id", field="session_id",
                                  value=f"{old.session_id} / {m.session_id}")
        self.vectors_.add(ids, vectors)
        for m in metas:
            self.meta.put(m)

    def delete(self, ids: list[int]) -> int:
        n = self.vectors_.remove(np.asarray(ids, dtype=np.int64))
        for i in ids:
            self.meta.remove(int(i))
        return n

    def search(self, queries: np.ndarray, k: int, flt: Filter | None = None
               ) -> list[list[SearchHit]]:
        allowed = excluded = None
        if flt is not None and not flt.is_empty():
            if set(flt.model_dump(exclude_defaults=True)) <= {"exclude_users",
                                                               "exclude_sessions"}:
                excluded = self.meta.excluded(flt)  # "all but these": the common query
            else:
                allowed = self.meta.matching(flt)
        scores, ids = self.vectors_.search(queries, k, allowed, excluded)
        get = self.meta.get
        return [[SearchHit(i, s, get(i)) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores.tolist(), ids.tolist())]

    def get(self, session_id: str) -> SessionMeta | None:
        return self.meta.by_session(session_id)

    def vectors(self, ids: list[int]) -> np.ndarray:
        return self.vectors_.vectors(ids)

    def ids_of_user(self, user_id: str) -> list[int]:
        return self.meta.ids_of_user(user_id)

    def metadata(self) -> pl.DataFrame:
        return self.meta.frame()

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: str | Path, stores: Mapping[str, StoreManifest] | None = None,
             artifacts: Mapping[str, Artifact] | None = None) -> IndexConfig:
        """Write the index folder atomically (see :mod:`behavior_rag.index.storage`), with
        ``stores`` (session stores prepared in the folder) and ``artifacts`` (fitted folders
        written in it, e.g. the model) in the same commit; what they do not name stays as
        the last commit lists it."""
        root = Path(path)
        last = read_config(root) if (root / "config.json").exists() or \
            (root / "config.json").is_symlink() else None
        if stores is None:
            stores = last.stores if last else {}
        artifacts = {**(last.artifacts if last else {}), **(artifacts or {})}
        tmp = new_data_dir(root)
        v = self.vectors_
        if v.index is not None:
            v.faiss.write_index(v.index, str(tmp / "faiss.index"))
        np.save(tmp / "ids.npy", v.labels, allow_pickle=False)
        self.meta.write(tmp / "metadata.parquet")
        cfg = IndexConfig(embedder=self.embedder, index=self.spec, kind=v.kind, count=len(self),
                          created=self.created, updated=self.created, data="",
                          hybrid=self.hybrid, stores=dict(stores), artifacts=artifacts)
        cfg = commit(root, tmp, cfg)
        self.path = root
        return cfg

    @classmethod
    def load(cls, path: str | Path, expect: EmbedderInfo | None = None,
             spec: IndexSettings | None = None) -> FaissSessionIndex:
        """Load an index folder; refuse it if ``expect`` names another model or dimension."""
        root = Path(path)
        cfg = read_config(root)  # schema, format and (format 2) the commit record checked
        if expect is not None and (expect.id, expect.dim) != (cfg.embedder.id, cfg.embedder.dim):
            raise EmbedderMismatch(
                f"index was built with {cfg.embedder.id} (dim {cfg.embedder.dim}) but the "
                f"configured embedder is {expect.id} (dim {expect.dim}); configure the same model, "
                f"or rebuild its vectors with this one: behavior-rag index reembed --index "
                f"{root} --model <model>", file=str(root), field="embedder",
                value=f"{expect.id}/{expect.dim}")
        # Search-time knobs may change on load (efSearch, nprobe, gpu); the structure may not.
        use = cfg.index if spec is None else spec.model_copy(update={
            "kind": cfg.index.kind, "sq8": cfg.index.sq8, "hnsw_m": cfg.index.hnsw_m,
            "nlist": cfg.index.nlist, "auto_threshold": cfg.index.auto_threshold})
        ix = cls(cfg.embedder, use, cfg.hybrid)
        ix.created = cfg.created
        data = data_dir(root, cfg)
        v = ix.vectors_
        v.kind = cfg.kind
        try:
            v.labels = np.load(data / "ids.npy", allow_pickle=False)
            if v.labels.ndim != 1 or v.labels.dtype != np.int64:
                raise StoreError(f"ids.npy holds a {v.labels.ndim}-D {v.labels.dtype} array, "
                                 "not 1-D int64", file=str(data / "ids.npy"))
            if (data / "faiss.index").exists():
                v.index = v.faiss.read_index(str(data / "faiss.index"))
                check_faiss(v.index, ix.dim, cfg.kind, len(v.labels), data / "faiss.index")
                v.width = v.index.d  # padded (or, written before padding, the plain dim)
                v.trained_at = v.index.ntotal  # unknown: taken as trained for what it holds
                if v.kind == "hnsw":
                    v.index.hnsw.efSearch = use.ef_search
            elif len(v.labels):
                raise StoreError(f"faiss.index is missing, ids.npy lists {len(v.labels)} "
                                 "vectors", file=str(data / "faiss.index"))
            ix.meta = MetadataStore.read(data / "metadata.parquet")
        except (OSError, RuntimeError, ValueError, pl.exceptions.PolarsError) as e:
            raise StoreError(f"index data is unreadable: {e}", file=str(data)) from e
        live = np.flatnonzero(v.labels >= 0)
        v.pos = dict(zip(v.labels[live].tolist(), live.tolist()))
        v.n_dead = int((v.labels < 0).sum())
        if len(v.pos) != len(ix.meta) or len(v.pos) != cfg.count:
            raise StoreError(f"index is inconsistent: {len(v.pos)} vectors, {len(ix.meta)} "
                             f"metadata rows, config says {cfg.count}", file=str(root))
        ix.path = root
        return ix


def check_faiss(index, dim: int, kind: str, n: int, path: Path) -> None:
    """A loaded faiss.index must be what config.json and ids.npy say it is."""
    name = type(index).__name__
    fits = {"flat": "IVF" not in name and "HNSW" not in name, "hnsw": "HNSW" in name,
            "ivf": "IVF" in name}.get(kind, False)
    problem = (f"holds vectors of dim {index.d}, the config says {dim}"
               if index.d not in (dim, padded(dim))
               else f"is a {name}, the config says kind {kind!r}" if not fits
               else f"holds {index.ntotal} vectors, ids.npy lists {n}" if index.ntotal != n
               else None)
    if problem:
        raise StoreError(f"faiss.index {problem}", file=str(path))
