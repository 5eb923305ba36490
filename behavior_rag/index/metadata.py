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

# Rows put since the load are kept as objects until this many, then folded into the frame: a
# million-session backfill holds a columnar frame, not a million pydantic objects.
FOLD_EVERY = 20_000
SCHEMA = {"id": pl.Int64, "session_id": pl.Utf8, "user_id": pl.Utf8, "label": pl.Utf8,
          "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"),
          "categories": pl.List(pl.Utf8), "has_purchase": pl.Boolean, "n_events": pl.Int64,
          "split": pl.Utf8, "text_hash": pl.Utf8, "text": pl.Utf8}


class MetadataStore:
    """``id -> SessionMeta`` over a columnar frame (what a load reads), plus the rows put since;
    objects are built only for the rows asked for, so a million sessions cost a frame, not a
    million pydantic objects."""

    def __init__(self) -> None:
        self._base = pl.DataFrame(schema=SCHEMA)  # as loaded; rows superseded are masked out
        self._base_ids = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)  # argsort of _base_ids, for lookups
        self._alive = np.zeros(0, dtype=bool)
        self._new: dict[int, SessionMeta] = {}
        self._by_session: dict[str, int] | None = None  # built on first lookup by session id
        self._by_user: dict[str, list[int]] | None = None  # built on first lookup by user
        self._frame: pl.DataFrame | None = None
        self._labelled: tuple[np.ndarray, dict[str, list[int]]] | None = None  # kNN fast path

    def _row(self, id_: int) -> int | None:
        """Position of a live base row with this id."""
        i = int(np.searchsorted(self._base_ids, id_, sorter=self._order))
        if i < len(self._order) and self._base_ids[self._order[i]] == id_:
            pos = int(self._order[i])
            return pos if self._alive[pos] else None
        return None

    def __len__(self) -> int:
        return int(self._alive.sum()) + len(self._new)

    def __contains__(self, id_: int) -> bool:
        return id_ in self._new or self._row(id_) is not None

    def _changed(self) -> None:
        self._frame = self._labelled = None

    def put(self, meta: SessionMeta) -> None:
        old = self.get(meta.id)
        pos = self._row(meta.id)
        if pos is not None:
            self._alive[pos] = False
        self._new[meta.id] = meta
        if self._by_session is not None:
            if old is not None:
                self._by_session.pop(old.session_id, None)
            self._by_session[meta.session_id] = meta.id
        if self._by_user is not None:
            if old is not None:
                self._unuser(old)
            self._by_user.setdefault(meta.user_id, []).append(meta.id)
        self._changed()
        if len(self._new) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        by_session, by_user = self._by_session, self._by_user  # still right: ids do not move
        self._load(self.frame())
        self._by_session, self._by_user = by_session, by_user

    def remove(self, id_: int) -> SessionMeta | None:
        meta = self._new.pop(id_, None)
        pos = self._row(id_) if meta is None else None
        if pos is not None:
            meta = self._meta(pos)
            self._alive[pos] = False
        if meta is not None:
            if self._by_session is not None:
                self._by_session.pop(meta.session_id, None)
            if self._by_user is not None:
                self._unuser(meta)
            self._changed()
        return meta

    def _unuser(self, meta: SessionMeta) -> None:
        assert self._by_user is not None
        mine = self._by_user.get(meta.user_id, [])
        if meta.id in mine:
            mine.remove(meta.id)

    def _meta(self, pos: int) -> SessionMeta:
        return SessionMeta.model_validate(self._base.row(pos, named=True))

    def get(self, id_: int) -> SessionMeta | None:
        if id_ in self._new:
            return self._new[id_]
        pos = self._row(id_)
        return None if pos is None else self._meta(pos)

    def by_session(self, session_id: str) -> SessionMeta | None:
        if self._by_session is None:
            f = self.frame()
            self._by_session = dict(zip(f["session_id"].to_list(), f["id"].to_list()))
        i = self._by_session.get(session_id)
        return None if i is None else self.get(i)

    def ids_of_user(self, user_id: str) -> list[int]:
        if self._by_user is None:
            f = self.frame()
            by: dict[str, list[int]] = {}
            for u, i in zip(f["user_id"].to_list(), f["id"].to_list()):
                by.setdefault(u, []).append(i)
            self._by_user = by
        return list(self._by_user.get(user_id, ()))

    def excluded(self, flt: Filter) -> np.ndarray:
        """Ids a filter of only ``exclude_users`` / ``exclude_sessions`` rules out."""
        ids = [i for u in flt.exclude_users for i in self.ids_of_user(u)]
        ids += [m.id for s in flt.exclude_sessions if (m := self.by_session(s)) is not None]
        return np.array(ids, dtype=np.int64)

    def frame(self) -> pl.DataFrame:
        """All metadata as one frame (rebuilt lazily after changes: a mask and the new rows)."""
        if self._frame is None:
            base = self._base.filter(pl.Series(self._alive)) if not self._alive.all() \
                else self._base
            rows = [m.model_dump() for m in self._new.values()]
            self._frame = pl.concat([base, pl.DataFrame(rows, schema=SCHEMA)]) if rows \
                else base
        return self._frame

    def _labelled_ids(self) -> tuple[np.ndarray, dict[str, list[int]]]:
        """Labelled ids (sorted) and, per user and per session id, their positions in it."""
        if self._labelled is None:
            f = self.frame().filter(pl.col("label").is_not_null()).sort("id")
            pos: dict[str, list[int]] = {}
            for i, (u, sid) in enumerate(zip(f["user_id"].to_list(),
                                             f["session_id"].to_list())):
                pos.setdefault("u:" + u, []).append(i)
                pos.setdefault("s:" + sid, []).append(i)
            self._labelled = (f["id"].to_numpy().astype(np.int64), pos)
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
        if set(frame.columns) != set(SCHEMA):
            raise ValueError(f"metadata columns {frame.columns} are not {list(SCHEMA)}")
        store._load(frame.select(list(SCHEMA)).cast(SCHEMA))  # type: ignore[arg-type]
        return store

    def _load(self, frame: pl.DataFrame) -> None:
        ids = frame["id"].to_numpy().astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("metadata has repeated ids")
        self._base, self._base_ids = frame, ids
        self._order = np.argsort(ids, kind="stable")
        self._alive = np.ones(len(ids), dtype=bool)
        self._new, self._by_session, self._by_user = {}, None, None
        self._changed()
