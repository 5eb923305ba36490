"""Segment files of a session store: one immutable pair of parquet files per write.

A segment ``seg-<hex>`` is ``seg-<hex>.sessions.parquet`` (one row per session, with the offset
of its first event) and ``seg-<hex>.events.parquet`` (the events of a session contiguous, in
the sessions' order). A lookup reads only the row groups of the slices it needs; attribute and aggregate dicts are JSON text (never pickle).

Example:
    >>> import tempfile, pathlib
    >>> from behavior_rag.synth import generate
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> ss = generate(5, seed=1).sessions
    >>> info = write_segment(d, ss)
    >>> table = read_table(d, info)
    >>> row = table.row(0, named=True)
    >>> [s.session_id for s in load_sessions(d, table.head(1))] == [row["session_id"]]
    True
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ValidationError, field_validator

from behavior_rag.atomic import writing_file
from behavior_rag.errors import StoreError
from behavior_rag.types import Event, Session

EVENT_SCHEMA = {"session_id": pl.Utf8, "idx": pl.Int32, "user_id": pl.Utf8,
                "timestamp": pl.Datetime("ms", "UTC"), "type": pl.Utf8, "item_id": pl.Utf8,
                "category": pl.Utf8, "brand": pl.Utf8, "price": pl.Float64, "query": pl.Utf8,
                "attrs": pl.Utf8}
SESSION_SCHEMA = {"session_id": pl.Utf8, "user_id": pl.Utf8, "label": pl.Utf8, "source": pl.Utf8,
                  "n_events": pl.Int32, "aggregates": pl.Utf8, "time_resolution": pl.Utf8,
                  "timezone": pl.Utf8, "start": pl.Datetime("ms", "UTC"),
                  "end": pl.Datetime("ms", "UTC"), "ev_offset": pl.Int64}
# small row groups: a lookup decodes ~this many events, not the whole file
ROW_GROUP = 4096


class SegmentInfo(BaseModel):
    """One segment as a manifest lists it (file names inside the store folder)."""

    name: str
    sessions_file: str
    events_file: str
    sessions: int
    events: int

    @field_validator("name", "sessions_file", "events_file")
    @classmethod
    def _plain(cls, v: str) -> str:
        return plain_name(v)


def plain_name(v: str) -> str:
    """``v`` if it is a bare file name (no folder part, not ``..``), else ValueError: a
    manifest (or an index's ``config.json``) may only name files inside its own folder."""
    if not v or v in (".", "..") or any(c in v for c in "/\\\0") or Path(v).is_absolute():
        raise ValueError(f"{v!r} is not a file name inside the store folder (paths are refused)")
    return v


def member(folder: Path, name: str, field: str) -> Path:
    """``folder / name``, checked to stay in ``folder``: no path parts, and a symbolic link must
    point to a file of the same folder. Raises :class:`StoreError` naming the file and field."""
    path = folder / name
    try:
        plain_name(name)
        inside = path.resolve().parent == folder.resolve()
    except (ValueError, OSError, RuntimeError):
        inside = False
    if not inside:
        raise StoreError(f"{field} {name!r} is not a file inside the store folder (paths and "
                         "links out of it are refused): the manifest is corrupt or was edited",
                         file=str(folder), field=field, value=name)
    return path


def _event_rows(sessions: Sequence[Session]) -> pl.DataFrame:
    cols: dict[str, list[Any]] = {k: [] for k in EVENT_SCHEMA}
    for s in sessions:
        for i, e in enumerate(s.events):
            for k, v in (("session_id", s.session_id), ("idx", i), ("user_id", e.user_id),
                         ("timestamp", e.timestamp), ("type", e.type), ("item_id", e.item_id),
                         ("category", e.category), ("brand", e.brand), ("price", e.price),
                         ("query", e.query),
                         ("attrs", json.dumps(e.attrs, sort_keys=True) if e.attrs else None)):
                cols[k].append(v)
    return pl.DataFrame(cols, schema=EVENT_SCHEMA)


def _session_rows(sessions: Sequence[Session]) -> pl.DataFrame:
    offsets, n = [], 0
    for s in sessions:
        offsets.append(n)
        n += len(s.events)
    return pl.DataFrame({
        "session_id": [s.session_id for s in sessions], "user_id": [s.user_id for s in sessions],
        "label": [s.label for s in sessions], "source": [s.source for s in sessions],
        "n_events": [s.n_events for s in sessions],
        "aggregates": [json.dumps(s.aggregates, sort_keys=True) if s.aggregates else None
                       for s in sessions],
        "time_resolution": [s.time_resolution for s in sessions],
        "timezone": [s.timezone for s in sessions],
        "start": [s.start if s.events else None for s in sessions],
        "end": [s.end if s.events else None for s in sessions],
        "ev_offset": offsets}, schema=SESSION_SCHEMA)


def write_segment(folder: Path, sessions: Sequence[Session]) -> SegmentInfo:
    """Write ``sessions`` as a new segment in ``folder`` (each file atomically, fsynced); it
    counts only once a manifest lists it."""
    order = list(sessions)  # kept: readers get sessions back in the order written
    name = f"seg-{uuid.uuid4().hex[:16]}"
    info = SegmentInfo(name=name, sessions_file=f"{name}.sessions.parquet",
                       events_file=f"{name}.events.parquet", sessions=len(order),
                       events=sum(len(s.events) for s in order))
    folder.mkdir(parents=True, exist_ok=True)
    for file, frame in ((info.events_file, _event_rows(order)),
                        (info.sessions_file, _session_rows(order))):
        with writing_file(folder / file) as tmp:
            frame.write_parquet(tmp, row_group_size=ROW_GROUP, statistics=True)
    return info


def merge_segments(folder: Path, parts: Sequence[tuple[SegmentInfo, pl.DataFrame]]
                   ) -> SegmentInfo:
    """One new segment holding ``parts``: each a segment and its live rows (of
    :func:`read_table`), in that order. Columns are copied as they are (events by slice, new
    offsets): no Session objects, so memory is that of the rows, not of pydantic models."""
    rows, events = [], []
    for info, live in parts:
        live = live.sort("row")  # file order = event order
        rows.append(live.select(list(SESSION_SCHEMA)))
        ranges = [(o, n) for o, n in zip(live["ev_offset"], live["n_events"]) if n]
        events.append(_events(folder, info.events_file, ranges))
    table = pl.concat(rows) if rows else pl.DataFrame(schema=SESSION_SCHEMA)
    ev = pl.concat(events) if events else pl.DataFrame(schema=EVENT_SCHEMA)
    n = table["n_events"].cast(pl.Int64)
    table = table.with_columns(ev_offset=(n.cum_sum() - n).fill_null(0))
    name = f"seg-{uuid.uuid4().hex[:16]}"
    info = SegmentInfo(name=name, sessions_file=f"{name}.sessions.parquet",
                       events_file=f"{name}.events.parquet", sessions=table.height,
                       events=ev.height)
    if ev.height != int(n.sum() or 0):
        raise StoreError(f"segments hold {ev.height} events for sessions that count "
                         f"{int(n.sum() or 0)}", file=str(folder))
    for file, frame in ((info.events_file, ev), (info.sessions_file, table)):
        with writing_file(folder / file) as tmp:
            frame.write_parquet(tmp, row_group_size=ROW_GROUP, statistics=True)
    return info


def read_table(folder: Path, info: SegmentInfo) -> pl.DataFrame:
    """The segment's session rows plus ``seg`` (its name) and ``row`` (position in the file),
    checked against the manifest and the events file (counts and offsets) before use."""
    path = member(folder, info.sessions_file, "sessions_file")
    events = member(folder, info.events_file, "events_file")
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise StoreError(f"cannot read session segment: {e}", file=str(path)) from e
    if frame.height != info.sessions or set(SESSION_SCHEMA) - set(frame.columns):
        raise StoreError(f"segment holds {frame.height} sessions with columns "
                         f"{frame.columns}; the manifest says {info.sessions}",
                         file=str(path))
    frame = utc_columns(frame, ("start", "end"), path)
    try:
        n_file = pl.scan_parquet(events).select(pl.len()).collect().item()
    except (OSError, pl.exceptions.PolarsError) as e:
        raise StoreError(f"cannot read event segment: {e}", file=str(events)) from e
    n = frame["n_events"].cast(pl.Int64)
    ends = frame["ev_offset"] + n
    if n_file != info.events or int(n.sum() or 0) != info.events or (
            frame.height and (int(ends.max()) > n_file or bool((n < 0).any()))):
        raise StoreError(f"event segment holds {n_file} events; the manifest says "
                         f"{info.events} and its sessions {int(n.sum() or 0)}: rows were "
                         "removed or the file was replaced", file=str(events))
    return frame.with_columns(seg=pl.lit(info.name), row=pl.int_range(frame.height,
                                                                      dtype=pl.Int32))


def utc_columns(frame: pl.DataFrame, cols: Sequence[str], path: Path) -> pl.DataFrame:
    """``cols`` of ``frame`` as UTC datetimes (naive ones read as UTC); another type is a
    :class:`StoreError` naming the file."""
    out = []
    for c in cols:
        dt = frame.schema.get(c)
        if not isinstance(dt, pl.Datetime):
            raise StoreError(f"column {c!r} is {dt}, not a datetime", file=str(path), field=c)
        col = pl.col(c).dt.replace_time_zone("UTC") if dt.time_zone is None \
            else pl.col(c).dt.convert_time_zone("UTC")
        out.append(col.dt.cast_time_unit("ms"))
    return frame.with_columns(out)


def _events(folder: Path, info_file: str, ranges: list[tuple[int, int]]) -> pl.DataFrame:
    path = member(folder, info_file, "events_file")
    try:
        lf = pl.scan_parquet(path)
        parts = [lf.slice(off, n).collect() for off, n in _merge(ranges)]
    except (OSError, pl.exceptions.PolarsError) as e:
        raise StoreError(f"cannot read event segment: {e}", file=str(path)) from e
    if not parts:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    return utc_columns(pl.concat(parts), ("timestamp",), path)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent or overlapping (offset, length) ranges joined: one read per run."""
    out: list[list[int]] = []
    for off, n in sorted(ranges):
        if out and off <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], off + n - out[-1][0])
        else:
            out.append([off, n])
    return [(a, b) for a, b in out]


def load_sessions(folder: Path, rows: pl.DataFrame,
                  files: dict[str, str] | None = None) -> list[Session]:
    """Sessions for ``rows`` of segment tables (any mix of segments), events read by slice.
    ``files`` maps a segment name to its events file (default ``<seg>.events.parquet``)."""
    parts = []
    for (seg,), part in rows.group_by(["seg"]):
        ranges = [(o, n) for o, n in zip(part["ev_offset"], part["n_events"]) if n]
        file = (files or {}).get(seg, f"{seg}.events.parquet")
        parts.append(_events(folder, file, ranges).with_columns(seg=pl.lit(seg)))
    events = pl.concat(parts) if parts else pl.DataFrame(schema={**EVENT_SCHEMA,
                                                                 "seg": pl.Utf8})
    names = {g: str(folder / f) for g, f in (files or {}).items()}
    return sessions_from_rows(list(rows.iter_rows(named=True)), events, str(folder), names)


def sessions_from_rows(rows: list[dict[str, Any]], events: pl.DataFrame, where: str,
                       files: dict[str, str] | None = None) -> list[Session]:
    """Session objects for session rows and the events frame holding theirs (in order). Each
    session must get exactly its ``n_events`` events, numbered 0, 1, … (else the event segment
    lost or gained rows: a :class:`StoreError`, never a session with missing events)."""
    by: dict[tuple[str | None, str], list[Event]] = {}
    seg = "seg" in events.columns
    for r in events.iter_rows(named=True):
        evs = by.setdefault((r["seg"] if seg else None, r["session_id"]), [])
        if r.get("idx", len(evs)) != len(evs):
            raise StoreError(f"event {len(evs)} of session {r['session_id']!r} is numbered "
                             f"{r.get('idx')}: the event segment is corrupt",
                             file=(files or {}).get(r["seg"] if seg else "", where),
                             field="events")
        evs.append(_event(r))
    out = []
    for r in rows:
        evs = by.get((r["seg"] if seg else None, r["session_id"]), [])
        if len(evs) != (r["n_events"] or 0):
            raise StoreError(f"session {r['session_id']!r} has {len(evs)} of its "
                             f"{r['n_events']} events in the event segment: rows were removed "
                             "or the file was replaced",
                             file=(files or {}).get(r["seg"] if seg else "", where),
                             field="events")
        try:
            out.append(Session(session_id=r["session_id"], user_id=r["user_id"],
                               label=r["label"], source=r["source"], events=evs,
                               aggregates=json.loads(r["aggregates"]) if r["aggregates"] else {},
                               time_resolution=r["time_resolution"], timezone=r["timezone"]))
        except (ValidationError, json.JSONDecodeError) as e:
            raise StoreError(f"store holds invalid data: {e}", file=where) from e
    return out


def _event(r: dict[str, Any]) -> Event:
    try:
        return Event(user_id=r["user_id"], session_id=r["session_id"], timestamp=r["timestamp"],
                     type=r["type"], item_id=r["item_id"], category=r["category"],
                     brand=r["brand"], price=r["price"], query=r["query"],
                     attrs=json.loads(r["attrs"]) if r["attrs"] else {})
    except (ValidationError, json.JSONDecodeError) as e:
        raise StoreError(f"store holds an invalid event: {e}", field="events",
                         value=r.get("session_id")) from e
