"""FAISS vector storage with stable 64-bit ids, tombstones and pre-filtered search.

Why not ``IndexIDMap2`` directly: HNSW cannot remove vectors, and an upsert into IDMap2 of an id
it already holds leaves the old vector answering searches. So we keep the same idea ourselves —
FAISS holds vectors under sequential internal ids, ``labels[internal] -> external id`` (``-1`` once
deleted or replaced), ``pos[external] -> internal`` — and every search passes an
``IDSelectorBitmap`` of the live (and filter-passing) internal ids, so deleted vectors and
filtered-out sessions are never scored. When a quarter of the slots are dead, the index is rebuilt
from its live vectors.

Example:
    >>> import numpy as np
    >>> from behavior_rag.settings import IndexSettings
    >>> v = FaissVectors(4, IndexSettings(kind="flat"))
    >>> v.add(np.array([7, 9]), np.eye(4, dtype="float32")[:2])
    >>> v.search(np.eye(4, dtype="float32")[:1], 1)[1].tolist()
    [[7]]
"""

from __future__ import annotations

import math

import numpy as np

from behavior_rag.errors import ConfigError
from behavior_rag.settings import IndexSettings

# Below this many allowed vectors, a filtered HNSW search scores them exactly instead: a graph
# walk through a sparse allow-list can miss hits, exact scoring of a few thousand cannot.
BRUTE_FORCE_MAX = 4096
COMPACT_DEAD_FRACTION = 0.25
# FAISS's scalar-quantizer distance code is SIMD only when the width is a multiple of 8: hybrid
# vectors (384 + 15 facts = 399) ran ~5x slower than at 400 (IVF-SQ8, 300k vectors: 7.2 vs
# 1.4 ms a query). Vectors are stored zero-padded; inner products do not change.
LANES = 8
# An IVF index trained on a small first batch (a fit's few thousand labelled sessions) keeps
# coarse, skewed lists as it grows: it retrains from its live vectors whenever it holds this
# many times the vectors it was trained at (auto nlist, 4 * sqrt(n), grows with it).
RETRAIN_GROWTH = 4
MIN_PER_LIST = 39  # FAISS's advice: at least 39 training points per list


def padded(dim: int) -> int:
    """The stored width for vectors of ``dim``.

    >>> padded(399), padded(384)
    (400, 384)
    """
    return -(-dim // LANES) * LANES


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - core dependency
        raise ImportError("FAISS is missing: pip install faiss-cpu (or the 'gpu' extra)") from e
    return faiss


class FaissVectors:
    """Vectors under stable int64 ids in a flat / HNSW / IVF FAISS index (optionally SQ8)."""

    def __init__(self, dim: int, spec: IndexSettings, kind: str | None = None) -> None:
        self.faiss = _faiss()
        if spec.omp_threads:
            self.faiss.omp_set_num_threads(spec.omp_threads)
        self.dim = dim
        self.width = padded(dim)  # what FAISS stores (a loaded older index: its own width)
        self.spec = spec
        self.kind = kind or ("flat" if spec.kind == "auto" else spec.kind)
        self.index = None  # created on first add (SQ8 and IVF train on the first batch)
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # see internal_of
        self.labels = np.zeros(0, dtype=np.int64)
        self.pos: dict[int, int] = {}
        self.n_dead = 0
        self._keep: list = []  # Python refs FAISS objects point into (quantizers, bitmaps)
        self._gpu = None
        self._gpu_dirty = True
        self._plain_params = None
        self.trained_at = 0  # vectors in the index when it was trained (IVF)

    # ---- construction -------------------------------------------------------------------
    def _new_index(self, train: np.ndarray):
        f, d, s = self.faiss, self.width, self.spec
        ip = f.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            idx = f.IndexScalarQuantizer(d, f.ScalarQuantizer.QT_8bit, ip) if s.sq8 \
                else f.IndexFlatIP(d)
        elif self.kind == "hnsw":
            idx = f.IndexHNSWSQ(d, f.ScalarQuantizer.QT_8bit, s.hnsw_m, ip) if s.sq8 \
                else f.IndexHNSWFlat(d, s.hnsw_m, ip)
            idx.hnsw.efConstruction = s.ef_construction
            idx.hnsw.efSearch = s.ef_search
        else:
            nlist = s.nlist or int(min(65536, max(16, 4 * math.sqrt(len(train)))))
            if len(train) < nlist:
                raise ConfigError(f"an IVF index needs at least nlist={nlist} vectors to train "
                                  f"(got {len(train)}); build it from more data or use flat/hnsw",
                                  field="index.kind", value="ivf")
            quantizer = f.IndexFlatIP(d)
            self._keep.append(quantizer)
            idx = f.IndexIVFScalarQuantizer(quantizer, d, nlist, f.ScalarQuantizer.QT_8bit, ip) \
                if s.sq8 else f.IndexIVFFlat(quantizer, d, nlist, ip)
            idx.nprobe = min(s.nprobe, nlist)
        if not idx.is_trained:
            sample = train
            if len(train) > 200_000:  # k-means on a sample: enough for centroids, far cheaper
                rng = np.random.default_rng(0)
                sample = train[rng.choice(len(train), 200_000, replace=False)]
            idx.train(np.ascontiguousarray(sample, dtype=np.float32))
        if self.kind == "ivf":
            idx.make_direct_map()  # lets us reconstruct vectors by internal id
        self.trained_at = len(train)
        return idx

    def _undertrained(self) -> bool:
        if self.kind != "ivf" or len(self.pos) < RETRAIN_GROWTH * max(self.trained_at, 1):
            return False
        return not self.spec.nlist or self.trained_at < MIN_PER_LIST * self.spec.nlist

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] == self.width:
            return x
        out = np.zeros((len(x), self.width), dtype=np.float32)
        out[:, : x.shape[1]] = x
        return out

    # ---- mutation -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.pos)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Upsert: ids already present are replaced (old slot tombstoned)."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ConfigError(f"expected {len(ids)} vectors of dim {self.dim}, got "
                              f"{vectors.shape}", field="vectors")
        if len(set(ids.tolist())) != len(ids):
            raise ConfigError("duplicate ids in one upsert batch", field="ids")
        if len(ids) == 0:
            return
        vectors = self._pad(vectors)
        if self.index is None:
            self.index = self._new_index(vectors)
            self._plain_params = None
        self.remove(ids)
        start = self.index.ntotal
        self.index.add(vectors)
        self.labels = np.concatenate([self.labels, ids])
        self.pos.update(zip(ids.tolist(), range(start, start + len(ids))))
        self._gpu_dirty, self._sorted = True, None
        if (self.spec.kind == "auto" and self.kind == "flat"
                and len(self.pos) > self.spec.auto_threshold):
            self.rebuild("hnsw")
        elif self._undertrained():
            self.rebuild("ivf")

    def remove(self, ids: np.ndarray) -> int:
        n = 0
        for e in np.asarray(ids, dtype=np.int64).tolist():
            i = self.pos.pop(e, None)
            if i is not None:
                self.labels[i] = -1
                n += 1
        self.n_dead += n
        if n:
            self._gpu_dirty, self._sorted = True, None
        if self.index is not None and self.n_dead > COMPACT_DEAD_FRACTION * max(
                self.index.ntotal, 1) and self.index.ntotal > 1000:
            self.rebuild(self.kind)
        return n

    def rebuild(self, kind: str) -> None:
        """Re-create the index (new kind or compaction) from the live vectors."""
        live = np.flatnonzero(self.labels >= 0)
        ids = self.labels[live].copy()
        vecs = self._pad(self._reconstruct(live))
        self.kind, self.index, self._keep, self._plain_params = kind, None, [], None
        self.labels, self.pos, self.n_dead = np.zeros(0, dtype=np.int64), {}, 0
        if len(ids):
            self.index = self._new_index(vecs)
            self.index.add(vecs)
            self.labels = ids
            self.pos = dict(zip(ids.tolist(), range(len(ids))))
        self._gpu_dirty, self._sorted = True, None

    def internal_of(self, ext: np.ndarray) -> np.ndarray:
        """Internal slots of the live external ids among ``ext`` (vectorised: a million
        allowed ids map in milliseconds, not a Python loop)."""
        if self._sorted is None:
            live = np.flatnonzero(self.labels >= 0)
            order = np.argsort(self.labels[live], kind="stable")
            self._sorted = (self.labels[live][order], live[order])
        keys, slots = self._sorted
        ext = np.asarray(ext, dtype=np.int64)
        if not len(keys) or not len(ext):
            return np.zeros(0, dtype=np.int64)
        i = np.minimum(np.searchsorted(keys, ext), len(keys) - 1)
        return slots[i[keys[i] == ext]]

    # ---- reading ------------------------------------------------------------------------
    def _reconstruct(self, internal: np.ndarray) -> np.ndarray:
        if len(internal) == 0 or self.index is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.index.reconstruct_batch(np.asarray(internal, dtype=np.int64))
        return out[:, : self.dim] if out.shape[1] != self.dim else out

    def vectors(self, ids: list[int]) -> np.ndarray:
        missing = [i for i in ids if i not in self.pos]
        if missing:
            raise KeyError(f"ids not in index: {missing[:5]}")
        return self._reconstruct(np.array([self.pos[i] for i in ids], dtype=np.int64))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and external ids, ``(n, k')`` with ``k' = min(k, #allowed)``; best first.

        ``allowed``: external ids that may be returned (None: all live ones); ``excluded``:
        external ids that may not (for "all but these": no list of everything else is built).
        """
        q = queries
        if not (q.dtype == np.float32 and q.ndim == 2 and q.flags.c_contiguous):
            q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.index is None or not self.pos:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if allowed is not None:
            internal = np.sort(self.internal_of(allowed))
        elif excluded is not None and len(excluded):
            mask = self.labels >= 0
            mask[self.internal_of(excluded)] = False
            internal = np.flatnonzero(mask)
        else:
            internal = None if self.n_dead == 0 else np.flatnonzero(self.labels >= 0)
        n_allowed = len(self.pos) if internal is None else len(internal)
        kk = min(k, n_allowed)
        if kk <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if internal is not None and self.kind == "hnsw" and n_allowed <= BRUTE_FORCE_MAX:
            return self._exact(q, kk, internal)
        q, qd = self._pad(q), q  # FAISS sees the stored width, exact scoring the real one
        if internal is None and self._use_gpu():
            scores, idx = self._gpu.search(q, kk)
        else:
            scores, idx = self.index.search(q, kk, params=self._params(internal))
        # FAISS pads missing hits with -1 at the row ends; a scalar test beats a numpy reduction
        # by ~5 us, which matters on a ~100 us search.
        if (idx[0, -1] >= 0) if len(idx) == 1 else bool((idx[:, -1] >= 0).all()):
            return scores, self.labels[idx]
        ext = np.where(idx >= 0, self.labels[np.maximum(idx, 0)], -1)
        short = (idx < 0).any(axis=1)
        if short.any():  # a graph walk / probed lists found fewer than k: score exhaustively
            if internal is None:
                internal = np.flatnonzero(self.labels >= 0)
            if self.kind == "ivf":
                s2, i2 = self.index.search(q[short], kk, params=self._params(
                    internal, nprobe=self.index.nlist))
                e2 = np.where(i2 >= 0, self.labels[np.maximum(i2, 0)], -1)
            else:
                s2, e2 = self._exact(qd[short], kk, internal)
            scores[short], ext[short] = s2, e2
        return scores, ext

    def _params(self, internal: np.ndarray | None, nprobe: int | None = None):
        if internal is None and nprobe is None and self._plain_params is not None:
            return self._plain_params
        f = self.faiss
        sel = None
        if internal is not None:
            mask = np.zeros(self.index.ntotal, dtype=bool)
            mask[internal] = True
            bits = np.packbits(mask, bitorder="little")
            sel = f.IDSelectorBitmap(self.index.ntotal, f.swig_ptr(bits))
            self._sel_refs = (bits, sel)  # FAISS reads the bitmap during search: keep it alive
        if self.kind == "hnsw":
            p = f.SearchParametersHNSW()
            p.efSearch = self.spec.ef_search
        elif self.kind == "ivf":
            p = f.SearchParametersIVF()
            p.nprobe = nprobe or min(self.spec.nprobe, self.index.nlist)
        else:
            p = f.SearchParameters()
        if sel is not None:
            p.sel = sel
        elif nprobe is None:
            self._plain_params = p  # reused until the index changes
        return p

    def _exact(self, q: np.ndarray, k: int, internal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vecs = self._reconstruct(internal)
        sims = q @ vecs.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else \
            np.tile(np.arange(sims.shape[1]), (len(q), 1))
        part = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(sims, top, axis=1).astype(np.float32), self.labels[internal[top]]

    # ---- GPU ----------------------------------------------------------------------------
    def _use_gpu(self) -> bool:
        """Search a GPU copy (rebuilt from the CPU index after changes) when one is visible.

        The CPU index stays the source of truth: GPU indexes cannot remove ids, and filtered
        searches stay on the CPU where IDSelectors apply.
        """
        if self.spec.gpu == "off" or self.kind == "hnsw" or self.n_dead:
            return False
        f = self.faiss
        if not hasattr(f, "StandardGpuResources") or f.get_num_gpus() < 1:
            if self.spec.gpu == "on":
                raise ConfigError("index.gpu=on but no GPU FAISS/GPU is visible: install the "
                                  "'gpu' extra (faiss-gpu) on a machine with an NVIDIA GPU")
            return False
        if self._gpu is None or self._gpu_dirty:
            res = f.StandardGpuResources()
            self._gpu = f.index_cpu_to_gpu(res, 0, self.index)
            self._gpu_res = res
            self._gpu_dirty = False
        return True

    def memory_bytes(self) -> int:
        """Serialized size of the FAISS index (what it holds in RAM, near enough)."""
        if self.index is None:
            return 0
        return int(self.faiss.serialize_index(self.index).nbytes) + self.labels.nbytes
