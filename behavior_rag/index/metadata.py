"""Metadata beside the vectors: in memory for O(1) lookups on the search path, columnar (polars)
for filters, parquet on disk.

Example:
    >>> m = MetadataStore()
    >>> m.put(SessionMeta(id=1, session_id="a", user_id="u1", label="x"))
    >>> m.put(SessionMeta(id=2, session_id="b", user_id="u2"))
    >>> m.matching(Filter(labelled=True)).tolist()
    [1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from behavior_rag.index.base import Filter, SessionMeta

SCHEMA = {"id": pl.Int64, "session_id": pl.Utf8, "user_id": pl.Utf8, "label": pl.Utf8,
          "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"),
          "categories": pl.List(pl.Utf8), "has_purchase": pl.Boolean, "n_events": pl.Int64,
          "split": pl.Utf8, "text_hash": pl.Utf8, "text": pl.Utf8}


class MetadataStore:
    """``id -> SessionMeta`` with a session-id and user index, and vectorised filters."""

    def __init__(self) -> None:
        self._by_id: dict[int, SessionMeta] = {}
        self._by_session: dict[str, int] = {}
        self._frame: pl.DataFrame | None = None
        self._labelled: tuple[np.ndarray, dict[str, list[int]]] | None = None  # kNN fast path

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, id_: int) -> bool:
        return id_ in self._by_id

    def put(self, meta: SessionMeta) -> None:
        self._by_id[meta.id] = meta
        self._by_session[meta.session_id] = meta.id
        self._frame = self._labelled = None

    def remove(self, id_: int) -> SessionMeta | None:
        meta = self._by_id.pop(id_, None)
        if meta is not None:
            self._by_session.pop(meta.session_id, None)
            self._frame = self._labelled = None
        return meta

    def get(self, id_: int) -> SessionMeta | None:
        return self._by_id.get(id_)

    def by_session(self, session_id: str) -> SessionMeta | None:
        i = self._by_session.get(session_id)
        return None if i is None else self._by_id[i]

    def ids_of_user(self, user_id: str) -> list[int]:
        f = self.frame()
        return f.filter(pl.col("user_id") == user_id)["id"].to_list()

    def frame(self) -> pl.DataFrame:
        """All metadata as one frame (rebuilt lazily after changes)."""
        if self._frame is None:
            rows = [m.model_dump() for m in self._by_id.values()]
            self._frame = pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(
                schema=SCHEMA)
        return self._frame

    def _labelled_ids(self) -> tuple[np.ndarray, dict[str, list[int]]]:
        """Labelled ids (sorted) and, per user and per session id, their positions in it."""
        if self._labelled is None:
            metas = sorted((m for m in self._by_id.values() if m.label is not None),
                           key=lambda m: m.id)
            pos: dict[str, list[int]] = {}
            for i, m in enumerate(metas):
                pos.setdefault("u:" + m.user_id, []).append(i)
                pos.setdefault("s:" + m.session_id, []).append(i)
            self._labelled = (np.array([m.id for m in metas], dtype=np.int64), pos)
        return self._labelled

    def _knn_filter(self, flt: Filter) -> np.ndarray:
        # the classifier's filter on every query (labelled, not this user or session): numpy on
        # a cached labelled set instead of a polars scan of the whole frame
        ids, pos = self._labelled_ids()
        drop = [i for u in flt.exclude_users for i in pos.get("u:" + u, ())]
        drop += [i for sid in flt.exclude_sessions for i in pos.get("s:" + sid, ())]
        return np.delete(ids, drop) if drop else ids

    def matching(self, flt: Filter) -> np.ndarray:
        """Ids of sessions passing ``flt`` (int64, sorted)."""
        if flt.labelled and flt == Filter(labelled=True, exclude_users=flt.exclude_users,
                                          exclude_sessions=flt.exclude_sessions):
            return self._knn_filter(flt)
        f = self.frame()
        conds = []
        if flt.labelled is not None:
            conds.append(pl.col("label").is_not_null() if flt.labelled
                         else pl.col("label").is_null())
        if flt.labels is not None:
            conds.append(pl.col("label").is_in(flt.labels))
        if flt.categories is not None:
            conds.append(pl.col("categories").list.eval(
                pl.element().is_in(flt.categories)).list.any())
        if flt.start_from is not None:
            conds.append(pl.col("start") >= flt.start_from)
        if flt.start_to is not None:
            conds.append(pl.col("start") < flt.start_to)
        if flt.users is not None:
            conds.append(pl.col("user_id").is_in(flt.users))
        if flt.exclude_users:
            conds.append(~pl.col("user_id").is_in(flt.exclude_users))
        if flt.exclude_sessions:
            conds.append(~pl.col("session_id").is_in(flt.exclude_sessions))
        if flt.has_purchase is not None:
            conds.append(pl.col("has_purchase") == flt.has_purchase)
        if flt.split is not None:
            conds.append(pl.col("split") == flt.split)
        if conds:
            f = f.filter(pl.all_horizontal(conds).fill_null(False))
        return np.sort(f["id"].to_numpy().astype(np.int64))

    def write(self, path: Path) -> None:
        self.frame().write_parquet(path)

    @classmethod
    def read(cls, path: Path) -> MetadataStore:
        store = cls()
        frame = pl.read_parquet(path)
        for row in frame.iter_rows(named=True):
            store.put(SessionMeta.model_validate(row))
        store._frame = frame
        return store
