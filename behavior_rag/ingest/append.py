"""``behavior-rag ingest FILE --out STORE --append``: a second event log (orders beside clicks)
joined into the sessions of a store that is already there.

Each file is read as ``ingest`` reads it (its own ``--map`` / ``--mapping``, the same
validation and pseudonyms); only the step that gives each event its session changes:

* **Rows with a source session id** join the store's session of that id. A session id shared by
  strangers is qualified by user (``id:user``) as :func:`~behavior_rag.ingest.sessionize.
  sessionize` does: the rows join ``id:user`` if the store has it, else ``id`` when its user is
  theirs or either side is anonymous (a log without user ids: one anonymous user per session).
  The session keeps its user; the joined events take it. Otherwise they start a session.
* **Rows without a session id** are chained with the store's sessions of the same
  (pseudonymised) user by the gap rule: ordered by time, a gap *strictly longer* than the
  session gap (the store's, as recorded by its first ingest; ``--gap-minutes`` overrides) ends a
  run. A run that touches no existing session becomes a new session with the id a fresh ingest
  would give it (``s_`` + hash of user and first time). A run that touches one joins it (also
  before its first event: the session starts earlier, its id stays). A run that touches two or
  more (**bridging**: the new events fill the gap between them) never merges them: each event
  joins the *nearest in time* of them (0 inside one; ties go to the earlier session).
* **Duplicates**: an event exactly equal (time, type, item, category, brand, price, query,
  attrs) to one already in its session is dropped and counted (appending a file twice adds
  nothing). A file's own repeated rows are kept, as a plain ingest keeps them. Events equal in
  time, type and item but differing in another field are kept and counted apart.

Existing session ids never change; events stay in time order within a session (ties: stored
events first). The store's writer lock (:mod:`behavior_rag.ingest.lock`) is held from reading the
manifest to committing the new one; the new events are written as new segments plus tombstones
for the sessions they replace, and one atomic rename of ``manifest.json`` commits them: a crash
before it leaves the old store whole (the unlisted files are swept by the next commit).

Example:
    >>> import tempfile, pathlib
    >>> from behavior_rag.ingest.store import write_store, read_store
    >>> from behavior_rag.ingest.load import load_records
    >>> from behavior_rag.settings import Settings
    >>> s = Settings(ingest={"pseudonym_key": "k"})
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> first = load_records([{"user_id": "1", "timestamp": "2024-01-01T10:00:00",
    ...                        "event_type": "view", "item_id": "a"}], settings=s)
    >>> _ = write_store(first.sessions, d / "st", info={"ingest": first.report.model_dump()})
    >>> _ = (d / "orders.csv").write_text("user_id,timestamp,item_id\\n1,2024-01-01T10:05:00,a\\n")
    >>> from behavior_rag.ingest.models import ColumnMapping
    >>> r = append_events(d / "orders.csv", d / "st", settings=s,
    ...                   mapping=ColumnMapping(event_type_constant="purchase"))
    >>> r.report.append.events_joined, [e.type for e in read_store(d / "st")[0].events]
    (1, ['view', 'purchase'])
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from behavior_rag.atomic import replace_file
from behavior_rag.errors import ConfigError, IngestError
from behavior_rag.faults import crash_point
from behavior_rag.ingest.load import Mode, check_gap, load_events
from behavior_rag.ingest.lock import store_lock
from behavior_rag.ingest.models import (
    AppendReport,
    ColumnMapping,
    FormatSpec,
    IngestResult,
    ReadOptions,
)
from behavior_rag.ingest.pseudonym import is_anonymous
from behavior_rag.ingest.readers import ROW
from behavior_rag.ingest.sessionize import gap_session_id, sessionize
from behavior_rag.ingest.store import SessionStore, StoreManifest, read_manifest
from behavior_rag.ingest.target import check_append_target
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Event, Session

# Crash points (BEHAVIOR_RAG_CRASH_AT, behavior_rag.faults): segments and tombstones written,
# manifest still the old one / manifest replaced, files no longer listed not yet swept.
PREPARED, COMMITTED = "append-prepared", "append-committed"
MAX_APPENDS_KEPT = 100  # reports of earlier appends kept in the manifest's info
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_COARSE = {"millisecond": 0, "second": 1, "day": 2}


def append_events(path: str | Path, store: str | Path, fmt: str | FormatSpec | None = "auto", *,
                  mapping: ColumnMapping | None = None, settings: Settings | None = None,
                  mode: Mode | None = None, options: ReadOptions | None = None,
                  gap_minutes: float | None = None) -> IngestResult:
    """Read the event log ``path`` and join its events into the session store ``store`` (see
    the module's docstring for the rule); returns the file's ingest report with ``append``
    saying what changed. Raises :class:`StoreError` if ``store`` is not a session store,
    :class:`WriteConflict` if another writer holds it; nothing is written on any error."""
    settings = settings or default_settings()
    store = Path(store)
    check_append_target(store)
    with store_lock(store, settings.index.lock_timeout_s):
        check_append_target(store)  # it may have changed while we waited
        manifest = read_manifest(store)
        recorded = _recorded(manifest)
        gap = gap_minutes if gap_minutes is not None else recorded.get(
            "gap_minutes") or settings.ingest.session_gap_minutes
        check_gap(gap)
        settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(
            update={"session_gap_minutes": gap})})
        st = SessionStore(store, manifest)
        join = _Join(st)
        result = load_events(path, fmt, mapping=mapping, settings=settings, mode=mode,
                             options=options, sessionizer=join)
        if not join.called:
            raise ConfigError(f"--append joins events into sessions; the {result.report.format} "
                              "format has one aggregate row per session and no events: ingest "
                              "it into a store of its own", file=str(path), field="format")
        _check_key(recorded, result, store)
        merged, rep, skipped = _merge(st, result.sessions, join, result.report.mode, str(path))
        st.upsert(merged)
        added = rep.events_joined + rep.events_in_new_sessions
        rep = rep.model_copy(update={"store": str(store), "gap_minutes": gap,
                                     "store_sessions": len(st),
                                     "store_events": manifest.events + added})
        report = result.report.model_copy(update={"append": rep})
        if skipped:
            by = dict(report.skipped_by_reason)
            by["too_many_events"] = by.get("too_many_events", 0) + skipped
            report = report.model_copy(update={"skipped_by_reason": by,
                                               "rows_skipped": report.rows_skipped + skipped,
                                               "rows_ok": report.rows_ok - skipped})
        appends = list(manifest.info.get("appends") or [])[-(MAX_APPENDS_KEPT - 1):]
        info = manifest.info | {"appends": [*appends, report.model_dump(mode="json")]}
        new = st.prepare(info)
        crash_point(PREPARED)
        replace_file(store / "manifest.json", new.model_dump_json(indent=2))
        crash_point(COMMITTED)
        st.committed(new)
    return IngestResult(sessions=merged, report=report)


def _recorded(manifest: StoreManifest) -> dict[str, Any]:
    """What the store's first ingest (or a later append) recorded: gap, pseudonym key id."""
    out: dict[str, Any] = {}
    reports = [manifest.info.get("ingest"), *(manifest.info.get("appends") or [])]
    for r in reports:
        if not isinstance(r, dict):
            continue
        if r.get("gap_minutes") and "gap_minutes" not in out:
            out["gap_minutes"] = r["gap_minutes"]
        if "pseudonym_key_id" in r and (r.get("events") or 0) > 0 and "key" not in out:
            out["key"] = r["pseudonym_key_id"]
    return out


def _check_key(recorded: dict[str, Any], result: IngestResult, store: Path) -> None:
    """Refuse a file whose users were pseudonymised otherwise than the store's: none of them
    could join (a different key, or pseudonyms on one side and raw ids on the other)."""
    if "key" not in recorded or not result.report.events:
        return
    mine = result.report.pseudonym_key_id
    if mine != recorded["key"]:
        how = ("raw user ids (--no-pseudonymize)" if recorded["key"] is None else
               "pseudonyms made with another key" if mine is not None else "pseudonyms")
        raise ConfigError(
            f"--append: the store {str(store)!r} holds {how} compared with this file's: its "
            "users could never match. Use the same BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY (or home) "
            "and the same --no-pseudonymize choice as for the store's first file",
            file=str(store), field="pseudonym_key")


class _Join:
    """The sessionizer of one appended file (``load.Sessionizer``): gives each row the id of
    the session it joins or starts, remembering which ids are already in the store."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.called = False
        self.existing: set[str] = set()  # ids the file's rows joined
        self.by_gap: set[str] = set()  # ... of them joined only by user within the gap
        self.bridging_runs = 0
        self._id_joined: set[str] = set()

    def __call__(self, df: pl.DataFrame, gap_minutes: float) -> pl.DataFrame:
        self.called = True
        ided = df.filter(pl.col("session_id").is_not_null())
        free = df.filter(pl.col("session_id").is_null())
        parts = [self._by_id(ided, gap_minutes), self._by_gap(free, gap_minutes)]
        self.by_gap -= self._id_joined
        return pl.concat(parts, how="vertical")

    # ---- rows with a source session id ----------------------------------------------------
    def _by_id(self, df: pl.DataFrame, gap_minutes: float) -> pl.DataFrame:
        if not df.height:
            return df.with_columns(pl.lit(None, pl.Utf8).alias("sid"))
        base = sessionize(df, gap_minutes)  # sid: the id, or id:user when strangers share it
        pairs = base.select("session_id", "user_id", "sid").unique().rows()
        wanted = {g for g, _, _ in pairs} | {f"{g}:{u}" for g, u, _ in pairs}
        known = dict(self.store.spans(session_ids=sorted(wanted))
                     .select("session_id", "user_id").rows())
        out = []
        for given, user, sid in pairs:
            qualified = f"{given}:{user}"
            if qualified in known:
                sid, user2 = qualified, known[qualified]
            elif given in known and _compatible(known[given], user):
                sid, user2 = given, known[given]
            elif given in known:  # the store's session of that id is a stranger's
                sid, user2 = qualified, user
            else:
                user2 = user
            if sid in known:
                self._id_joined.add(sid)
            out.append((given, user, sid, user2))
        self.existing |= self._id_joined
        table = pl.DataFrame(out, schema={"session_id": pl.Utf8, "user_id": pl.Utf8,
                                          "_sid": pl.Utf8, "_user": pl.Utf8}, orient="row")
        return (base.join(table, on=["session_id", "user_id"], how="left")
                .with_columns(pl.col("_sid").alias("sid"), pl.col("_user").alias("user_id"))
                .drop("_sid", "_user"))

    # ---- rows without: by user within the gap ---------------------------------------------
    def _by_gap(self, df: pl.DataFrame, gap_minutes: float) -> pl.DataFrame:
        if not df.height:
            return df.with_columns(pl.lit(None, pl.Utf8).alias("sid"))
        gap = int(round(gap_minutes * 60_000))
        ev = df.select(ROW, "user_id", pl.col("_ts").dt.epoch("ms").alias("t")) \
            .sort(["user_id", "t", ROW])
        spans: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        found = self.store.spans(user_ids=ev["user_id"].unique().to_list()) \
            .filter(pl.col("start").is_not_null())
        for sid, user, start, end in found.select(
                "session_id", "user_id", pl.col("start").dt.epoch("ms"),
                pl.col("end").dt.epoch("ms")).sort("start", "session_id").rows():
            spans[user].append((start, end, sid))
        rows, sids = [], []
        users, times, ids = ev["user_id"].to_list(), ev["t"].to_list(), ev[ROW].to_list()
        i = 0
        while i < len(users):
            j = i
            while j < len(users) and users[j] == users[i]:
                j += 1
            events = list(zip(times[i:j], ids[i:j]))
            for run_spans, run_events in _runs(events, spans.get(users[i], []), gap):
                for row, sid in self._assign(users[i], run_spans, run_events):
                    rows.append(row)
                    sids.append(sid)
            i = j
        table = pl.DataFrame({ROW: rows, "sid": sids},
                             schema={ROW: df.schema[ROW], "sid": pl.Utf8})
        return df.join(table, on=ROW, how="left")

    def _assign(self, user: str, spans: list[tuple[int, int, str]],
                events: list[tuple[int, int]]) -> Iterator[tuple[int, str]]:
        if not spans:  # a new session, with the id a fresh ingest would give it
            sid = gap_session_id(user, _EPOCH + timedelta(milliseconds=events[0][0]))
            yield from ((row, sid) for _, row in events)
            return
        if len(spans) > 1:
            self.bridging_runs += 1
        for t, row in events:
            sid = min(spans, key=lambda s: (_distance(t, s), s[0]))[2]
            self.existing.add(sid)
            self.by_gap.add(sid)
            yield row, sid


def _runs(events: list[tuple[int, int]], spans: list[tuple[int, int, str]], gap: int
          ) -> Iterator[tuple[list[tuple[int, int, str]], list[tuple[int, int]]]]:
    """One user's new events ``(t, row)`` and existing sessions ``(start, end, id)`` (both
    sorted, times in ms) cut into runs at gaps strictly longer than ``gap``; runs without new
    events are skipped."""
    run_spans: list[tuple[int, int, str]] = []
    run_events: list[tuple[int, int]] = []
    end: int | None = None
    i = j = 0
    while i < len(events) or j < len(spans):
        is_span = j < len(spans) and (i >= len(events) or spans[j][0] <= events[i][0])
        start, stop = (spans[j][0], spans[j][1]) if is_span else (events[i][0], events[i][0])
        if end is not None and start - end > gap:
            if run_events:
                yield run_spans, run_events
            run_spans, run_events, end = [], [], None
        if is_span:
            run_spans.append(spans[j])
            j += 1
        else:
            run_events.append(events[i])
            i += 1
        end = stop if end is None else max(end, stop)
    if run_events:
        yield run_spans, run_events


def _distance(t: int, span: tuple[int, int, str]) -> int:
    return 0 if span[0] <= t <= span[1] else min(abs(t - span[0]), abs(t - span[1]))


def _compatible(stored_user: str, user: str) -> bool:
    return stored_user == user or is_anonymous(stored_user) or is_anonymous(user)


def _key(e: Event) -> tuple:
    return (e.timestamp, e.type, e.item_id, e.category, e.brand, e.price, e.query,
            json.dumps(e.attrs, sort_keys=True))


def _near(e: Event) -> tuple:
    return (e.timestamp, e.type, e.item_id)


def _merge(store: SessionStore, sessions: list[Session], join: _Join, mode: str, file: str
           ) -> tuple[list[Session], AppendReport, int]:
    """The file's sessions joined with the store's: (sessions to upsert, counts, events
    skipped because a session would pass MAX_EVENTS in lenient mode)."""
    old = {s.session_id: s for s in store.get_many(
        [s.session_id for s in sessions if s.session_id in join.existing])}
    out: list[Session] = []
    c: dict[str, int] = defaultdict(int)
    skipped = 0
    for new in sessions:
        prev = old.get(new.session_id)
        if prev is None:
            out.append(new)
            c["sessions_new"] += 1
            c["events_in_new_sessions"] += len(new.events)
            continue
        keys = {_key(e) for e in prev.events}
        near = {_near(e) for e in prev.events}
        add = []
        for e in new.events:
            if _key(e) in keys:
                c["duplicates_dropped"] += 1
                continue
            c["near_duplicates_kept"] += _near(e) in near
            add.append(e)
        if not add:
            continue
        try:
            merged = Session(
                session_id=prev.session_id, user_id=prev.user_id,
                events=sorted(prev.events + add, key=lambda e: e.timestamp),
                aggregates=prev.aggregates, label=prev.label, source=prev.source,
                time_resolution=_coarser(prev.time_resolution, new.time_resolution),
                timezone=prev.timezone or new.timezone)
        except ValidationError as e:
            if mode == "strict":
                raise IngestError(f"joining this file's events would give session "
                                  f"{prev.session_id!r} {len(prev.events) + len(add)} events, "
                                  "more than a session may hold (bounds.MAX_EVENTS); nothing "
                                  "was written (--mode lenient skips them)", file=file,
                                  field="session_id", value=prev.session_id,
                                  reason="too_many_events") from e
            skipped += len(add)
            continue
        out.append(merged)
        c["sessions_touched"] += 1
        c["events_joined"] += len(add)
        kind = "events_joined_by_gap" if prev.session_id in join.by_gap \
            else "events_joined_by_session_id"
        c[kind] += len(add)
    rep = AppendReport(store="", gap_minutes=1, bridging_runs=join.bridging_runs, **c)
    return out, rep, skipped


def _coarser(a: str | None, b: str | None) -> Any:
    """The coarser of two time resolutions (day > second > millisecond; None: unknown)."""
    known = [r for r in (a, b) if r is not None]
    return max(known, key=_COARSE.__getitem__) if known else None
