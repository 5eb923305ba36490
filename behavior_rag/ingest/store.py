"""The session store: append-only segments plus tombstones, committed by one manifest.

A store folder holds immutable segment files (:mod:`behavior_rag.ingest.segments`), a tombstone
file naming dead rows, and a manifest listing what is live. An upsert writes a new segment
and tombstones the rows it replaces; nothing already written is rewritten until compaction,
which is tiered: when more than :data:`~behavior_rag.ingest.compaction.MAX_SEGMENTS`
segments are small (under :data:`~behavior_rag.ingest.compaction.FULL_SEGMENT` live sessions) they are merged into full ones, and a segment whose rows
are a quarter dead is rewritten alone; full, mostly live segments are never touched. Merging
copies columns (:func:`~behavior_rag.ingest.segments.merge_segments`), a full segment at a
time, so a million-session store compacts in bounded memory. Lookups by session id or user id
read one slice of one segment's events, never the whole store.

The commit point is a single atomic rename of the manifest: ``manifest.json`` for a standalone
store, or the index's ``config.json`` for the store inside an index folder (so vectors and
events commit together). Files no manifest lists (a crash before the commit) are swept by the
next commit. Attribute and aggregate dicts are JSON text (never pickle).

Example:
    >>> import tempfile
    >>> from behavior_rag.synth import generate
    >>> d = tempfile.mkdtemp()
    >>> ss = generate(10, seed=1).sessions
    >>> _ = write_store(ss, d + "/s")
    >>> st = open_store(d + "/s")
    >>> len(st), st.get(ss[3].session_id) == ss[3]
    (10, True)
    >>> st.delete([ss[3].session_id]), st.commit().sessions
    (1, 9)
    >>> len(open_store(d + "/s")), len(read_store(d + "/s"))
    (9, 9)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from behavior_rag.atomic import fsync_path, replace_dir, replace_file, writing_file
from behavior_rag.errors import StoreError
from behavior_rag.ingest import compaction
from behavior_rag.ingest.lock import store_lock
from behavior_rag.ingest.segments import (
    SESSION_SCHEMA,
    SegmentInfo,
    load_sessions,
    member,
    plain_name,
    read_table,
    sessions_from_rows,
    write_segment,
)
from behavior_rag.ingest.target import check_store_target
from behavior_rag.types import Session

FORMAT_VERSION = 2
FLUSH_EVERY = 20_000  # pending sessions written out as a segment (bounds memory on big loads)
TOMB_SCHEMA = {"seg": pl.Utf8, "row": pl.Int32}


class StoreManifest(BaseModel):
    """What a store holds: live counts, its segments and the file of dead rows."""

    format_version: int = FORMAT_VERSION
    sessions: int
    events: int
    users: int
    labels: dict[str, int]
    created: datetime
    info: dict[str, Any] = {}
    segments: list[SegmentInfo] = []
    tombstones: str | None = None

    @field_validator("tombstones")
    @classmethod
    def _plain(cls, v: str | None) -> str | None:
        return None if v is None else plain_name(v)

    @classmethod
    def empty(cls) -> StoreManifest:
        return cls(sessions=0, events=0, users=0, labels={}, created=datetime.now(timezone.utc))

    @model_validator(mode="after")
    def _legacy(self) -> StoreManifest:
        # format 1: one unsorted pair of files and no offsets; read whole (see SessionStore)
        if self.format_version == 1 and not self.segments:
            self.segments = [SegmentInfo(name="legacy", sessions_file="sessions.parquet",
                                         events_file="events.parquet",
                                         sessions=self.sessions, events=self.events)]
        return self


class SessionStore:
    """Sessions by id and user, upserted and deleted in place; :meth:`commit` publishes.

    ``manifest``: the committed state when the caller keeps it (an index folder's config);
    ``None`` reads ``<path>/manifest.json`` (absent: an empty store).
    """

    def __init__(self, path: str | Path, manifest: StoreManifest | None = None, *,
                 own_manifest: bool = True) -> None:
        self.path = Path(path)
        self.own_manifest = own_manifest  # commit writes <path>/manifest.json
        if manifest is None and (self.path / "manifest.json").exists():
            manifest = read_manifest(self.path)
        if manifest is not None and manifest.format_version not in (1, FORMAT_VERSION):
            raise StoreError(f"store format {manifest.format_version} is not supported "
                             f"(expected {FORMAT_VERSION})", file=str(self.path))
        self.manifest = manifest
        self._table: pl.DataFrame | None = None  # live committed/flushed rows
        self._pending: dict[str, Session] = {}
        self._segments = list(manifest.segments) if manifest else []
        self._dead: pl.DataFrame | None = None
        self._legacy: dict[str, Session] | None = None

    # ---- reading --------------------------------------------------------------------------
    def _live(self) -> pl.DataFrame:
        if self._table is None:
            self._read_tables()
        assert self._table is not None
        return self._table

    def _read_tables(self) -> None:
        legacy = [g for g in self._segments if g.name == "legacy"]
        if legacy:  # format 1 has no event offsets: held in memory until the next commit
            self._pending = {s.session_id: s for s in _read_legacy(self.path)}
            self._segments = [g for g in self._segments if g.name != "legacy"]
        tables = [read_table(self.path, g) for g in self._segments]
        self._dead = self._read_dead()
        frame = pl.concat(tables) if tables else _empty()
        if self._dead.height:
            frame = frame.join(self._dead, on=["seg", "row"], how="anti")
        self._table = frame

    def _read_dead(self) -> pl.DataFrame:
        name = self.manifest.tombstones if self.manifest else None
        if not name:
            return pl.DataFrame(schema=TOMB_SCHEMA)
        path = member(self.path, name, "tombstones")
        try:
            return pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as e:
            raise StoreError(f"cannot read tombstones: {e}", file=str(path)) from e

    # invariant: a pending session is never also a live row (upsert kills the old row)
    def __len__(self) -> int:
        return self._live().height + len(self._pending)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._pending or bool(
            (self._live()["session_id"] == session_id).any())

    def ids(self) -> list[str]:
        """Every live session id (committed order, then pending)."""
        return self._live()["session_id"].to_list() + list(self._pending)

    def get(self, session_id: str) -> Session | None:
        got = self.get_many([session_id])
        return got[0] if got else None

    def get_many(self, ids: Sequence[str]) -> list[Session]:
        """The sessions with these ids, in that order (unknown ids are skipped)."""
        want = [i for i in ids if i not in self._pending]
        rows = self._live().filter(pl.col("session_id").is_in(want)) if want else _empty()
        found = {s.session_id: s for s in load_sessions(self.path, rows, self._files())}
        found |= {i: self._pending[i] for i in ids if i in self._pending}
        return [found[i] for i in ids if i in found]

    def of_user(self, user_id: str) -> list[Session]:
        """A user's sessions, oldest first."""
        rows = self._live().filter(pl.col("user_id") == user_id)
        out = load_sessions(self.path, rows, self._files())
        out += [s for s in self._pending.values() if s.user_id == user_id]
        return sorted(out, key=lambda s: (s.start if s.events else _EPOCH, s.session_id))

    def has_user(self, user_id: str) -> bool:
        return any(s.user_id == user_id for s in self._pending.values()) or bool(
            (self._live()["user_id"] == user_id).any())

    def spans(self, user_ids: Sequence[str] = (), session_ids: Sequence[str] = ()
              ) -> pl.DataFrame:
        """``session_id, user_id, start, end`` of the live sessions of these users or with these
        ids (no events read): what ``ingest --append`` joins new events to."""
        users, ids = set(user_ids), set(session_ids)
        cols = ["session_id", "user_id", "start", "end"]
        frame = self._live().filter(pl.col("user_id").is_in(list(users))
                                    | pl.col("session_id").is_in(list(ids))).select(cols)
        pend = [s for s in self._pending.values() if s.user_id in users or s.session_id in ids]
        if pend:
            frame = pl.concat([frame, pl.DataFrame(
                {"session_id": [s.session_id for s in pend], "user_id": [s.user_id for s in pend],
                 "start": [s.start for s in pend], "end": [s.end for s in pend]},
                schema=frame.schema)])
        return frame

    def last_event(self) -> datetime | None:
        """The newest event time in the store (the profile's "now")."""
        ends = [e for e in (self._live()["end"].max(), *(s.end for s in self._pending.values()
                                                if s.events)) if e is not None]
        return max(ends) if ends else None

    # a read-only mapping of id -> Session, as the dict it replaces: iteration gives ids
    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __getitem__(self, session_id: str) -> Session:
        got = self.get(session_id)
        if got is None:
            raise KeyError(session_id)
        return got

    def keys(self) -> list[str]:
        return self.ids()

    def items(self) -> Iterator[tuple[str, Session]]:
        return ((s.session_id, s) for s in self.values())

    def iter_batches(self, size: int = 2048) -> Iterator[list[Session]]:
        """Every live session in batches of ``size`` (a segment at a time: bounded memory)."""
        live = self._live()
        for start in range(0, live.height, size):
            yield load_sessions(self.path, live.slice(start, size), self._files())
        pend = list(self._pending.values())
        for start in range(0, len(pend), size):
            yield pend[start:start + size]

    def values(self) -> Iterator[Session]:
        """Every live session (read a batch at a time: bounded memory)."""
        for batch in self.iter_batches():
            yield from batch

    def _files(self) -> dict[str, str]:
        return {g.name: g.events_file for g in self._segments}

    # ---- writing --------------------------------------------------------------------------
    def upsert(self, sessions: Iterable[Session]) -> None:
        """Add or replace sessions (by id); visible at once, durable after :meth:`commit`."""
        new = {s.session_id: s for s in sessions}
        old = self._live().filter(pl.col("session_id").is_in(list(new)))
        if old.height:
            self._kill(old)
        self._pending.update(new)
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def delete(self, session_ids: Iterable[str]) -> int:
        """Remove sessions by id; returns how many were there."""
        ids = set(session_ids)
        n = sum(self._pending.pop(i, None) is not None for i in ids)
        gone = self._live().filter(pl.col("session_id").is_in(list(ids)))
        if gone.height:
            self._kill(gone)
        return n + gone.height

    def _kill(self, rows: pl.DataFrame) -> None:
        assert self._table is not None and self._dead is not None
        self._dead = pl.concat([self._dead, rows.select("seg", "row")])
        self._table = self._table.join(rows.select("seg", "row"), on=["seg", "row"],
                                       how="anti")

    def flush(self) -> None:
        """Write pending sessions as a segment (listed by the next commit)."""
        if not self._pending:
            return
        info = write_segment(self.path, list(self._pending.values()))
        self._segments.append(info)
        self._table = pl.concat([self._live(), read_table(self.path, info)])
        self._pending = {}

    def commit(self, info: dict[str, Any] | None = None) -> StoreManifest:
        """Write what is pending and publish: returns the new manifest. A standalone store
        renames its ``manifest.json`` (the commit point); a store inside an index folder leaves
        that to the index's ``config.json`` and calls :meth:`committed` after it."""
        manifest = self.prepare(info)
        if self.own_manifest:
            replace_file(self.path / "manifest.json", manifest.model_dump_json(indent=2))
            self.committed(manifest)
        return manifest

    def prepare(self, info: dict[str, Any] | None = None) -> StoreManifest:
        """Make every file of the next manifest durable and return it (not yet published)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.compact()  # flushes; tiered: usually nothing to rewrite
        live = self._live()
        dead = self._dead if self._dead is not None else pl.DataFrame(schema=TOMB_SCHEMA)
        alive = set(live["seg"].unique().to_list())
        self._segments = [g for g in self._segments if g.name in alive]
        dead = dead.filter(pl.col("seg").is_in(list(alive)))
        self._dead = dead
        tomb = None
        if dead.height:
            tomb = f"tomb-{datetime.now(timezone.utc):%Y%m%d%H%M%S%f}.parquet"
            with writing_file(self.path / tomb) as tmp:
                dead.write_parquet(tmp)
        fsync_path(self.path)
        labels = live["label"].drop_nulls().value_counts()
        self.manifest = StoreManifest(
            sessions=live.height, events=int(live["n_events"].sum() or 0),
            users=live["user_id"].n_unique(),
            labels={r["label"]: r["count"] for r in labels.iter_rows(named=True)},
            created=self.manifest.created if self.manifest else datetime.now(timezone.utc),
            info=info if info is not None else (self.manifest.info if self.manifest else {}),
            segments=list(self._segments), tombstones=tomb)
        return self.manifest

    def compact(self, *, every: bool = False) -> None:
        """Merge small segments (``every``: all of them; else only when too many are small) and
        rewrite mostly-dead ones (see :mod:`behavior_rag.ingest.compaction`)."""
        self.flush()
        live = self._live()
        dead = self._dead if self._dead is not None else pl.DataFrame(schema=TOMB_SCHEMA)
        plan = compaction.plan(self._segments, live, dead, every=every)
        if not plan:
            return
        out = compaction.merge(self.path, plan, live)
        gone = {g.name for g in plan}
        keep = [g for g in self._segments if g.name not in gone]
        self._segments = keep + out
        self._table = pl.concat([live.filter(~pl.col("seg").is_in(list(gone))),
                                 *(read_table(self.path, g) for g in out)])
        self._dead = dead.filter(~pl.col("seg").is_in(list(gone)))

    def committed(self, manifest: StoreManifest) -> None:
        """After the commit point: remove files no longer listed (older segments, tombstones,
        leftovers of interrupted writes)."""
        keep = {f for g in manifest.segments for f in (g.sessions_file, g.events_file)}
        keep |= {manifest.tombstones, "manifest.json" if self.own_manifest else None}
        for p in self.path.iterdir() if self.path.is_dir() else ():
            ours = p.name.startswith(("seg-", "tomb-", ".seg-", ".tomb-")) or p.name in (
                "events.parquet", "sessions.parquet", "manifest.json")
            if ours and p.name not in keep and p.is_file():
                p.unlink(missing_ok=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={**SESSION_SCHEMA, "seg": pl.Utf8, "row": pl.Int32})


def open_store(path: str | Path) -> SessionStore:
    """A standalone store folder (``behavior-rag ingest --out``); raises if there is none."""
    read_manifest(Path(path))
    return SessionStore(path)


def write_store(sessions: Sequence[Session], path: str | Path,
                info: dict[str, Any] | None = None, *,
                lock_timeout_s: float = 10.0) -> StoreManifest:
    """Write sessions to a store folder atomically (replacing any store already there, once
    no ``ingest --append`` is writing it: waits up to ``lock_timeout_s``)."""
    check_store_target(path)
    held = store_lock(path, lock_timeout_s) if Path(path).is_dir() else nullcontext()
    with held, replace_dir(path) as tmp:  # a store there: not while --append writes it
        st = SessionStore(tmp)
        st.upsert(sessions)
        manifest = st.commit(info or {})
    return manifest


def read_store(path: str | Path) -> list[Session]:
    """Every session of a store folder, events in order."""
    return list(open_store(path).values())


def _read_legacy(path: Path) -> list[Session]:
    """A format-1 store: events sorted by session, no offsets (read whole, once)."""
    try:
        events = pl.read_parquet(path / "events.parquet").sort(["session_id", "idx"])
        sess = pl.read_parquet(path / "sessions.parquet")
    except (OSError, pl.exceptions.PolarsError) as e:
        raise StoreError(f"cannot read store: {e}", file=str(path)) from e
    counts = events.group_by("session_id", maintain_order=True).len()
    starts = counts["len"].cum_sum() - counts["len"]
    offsets = dict(zip(counts["session_id"].to_list(), starts.to_list()))
    blank = {c: None for c in ("time_resolution", "timezone", "start", "end")}
    rows = [{**blank, **r, "seg": "legacy", "ev_offset": offsets.get(r["session_id"], 0),
             "n_events": r["n_events"] if r["session_id"] in offsets else 0}
            for r in sess.iter_rows(named=True)]
    return sessions_from_rows(rows, events, str(path))


def read_manifest(path: str | Path) -> StoreManifest:
    path = Path(path)
    try:
        return StoreManifest.model_validate_json((path / "manifest.json").read_text())
    except FileNotFoundError as e:
        raise StoreError("not a session store (no manifest.json)", file=str(path)) from e
    except ValidationError as e:
        raise StoreError(f"invalid manifest: {e}", file=str(path)) from e
