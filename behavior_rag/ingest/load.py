"""Event log -> validated, pseudonymised, sessionised :class:`Session` objects.

Example:
    >>> from behavior_rag.settings import Settings
    >>> res = load_records(
    ...     [{"user_id": "alice", "timestamp": "2024-01-01T10:00:00", "event_type": "view",
    ...       "item_id": "1"}], settings=Settings(ingest={"pseudonym_key": "k"}))
    >>> res.report.sessions, res.sessions[0].user_id.startswith("u_")
    (1, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import ValidationError

from behavior_rag.bounds import MAX_EVENTS
from behavior_rag.errors import ConfigError
from behavior_rag.ingest.formats import GENERIC, resolve_format
from behavior_rag.ingest.models import (
    CANONICAL_FIELDS,
    ColumnMapping,
    FormatSpec,
    IngestReport,
    IngestResult,
    ReadOptions,
    RowError,
)
from behavior_rag.ingest.pseudonym import Pseudonymizer, assign_users, is_anonymous
from behavior_rag.ingest.readers import ROW, raise_bad_lines, read_source, records_frame
from behavior_rag.ingest.report import raise_strict, reasons_per_row, row_errors
from behavior_rag.ingest.sessionize import sessionize
from behavior_rag.ingest.uci import load_uci
from behavior_rag.ingest.validate import (
    check_types,
    map_columns,
    resolution_of,
    unknown_columns,
    unused_columns,
)
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Event, Session, TimeResolution

Mode = Literal["strict", "lenient"]
# typed frame (``user_id`` pseudonymised, ``session_id``, ``_ts``, ``__row``), gap in minutes
# -> the frame with ``sid``: :func:`sessionize`, or ingest --append's join (ingest/append.py)
Sessionizer = Callable[[pl.DataFrame, float], pl.DataFrame]


def load_events(path: str | Path, fmt: str | FormatSpec | None = "auto", *,
                mapping: ColumnMapping | None = None, settings: Settings | None = None,
                mode: Mode | None = None, options: ReadOptions | None = None,
                sessionizer: Sessionizer | None = None) -> IngestResult:
    """Read an event log (CSV, JSONL, Parquet, or a built-in format) into sessions.

    ``mapping`` is laid over the detected format's mapping (or the generic one): only the
    fields it sets change. ``options`` override the delimiter (sniffed by default) and the null
    tokens. ``strict`` (default) raises :class:`IngestError` on the first bad row — after
    checking every row, so the error lists all problems — and returns nothing; ``lenient`` skips
    bad rows and counts them per reason in ``result.report``. ``sessionizer`` replaces the
    gap rule (:func:`~behavior_rag.ingest.sessionize.sessionize`) that gives each event its
    session id: ``ingest --append`` joins sessions already in a store that way.
    """
    settings = settings or default_settings()
    path = Path(path)
    check_gap(settings.ingest.session_gap_minutes)
    spec = resolve_format(fmt, path, mapping_given=mapping is not None)
    if options is not None:
        spec = options.apply(spec)
    if spec.kind == "aggregate":
        return load_uci(path, settings=settings, mode=mode or settings.ingest.mode)
    spec = with_mapping(spec, mapping)
    spec = options.zoned(spec) if options is not None else spec
    t0 = time.perf_counter()
    mode = mode or settings.ingest.mode
    got = read_source(path, spec)
    if got.bad_lines and mode == "strict":
        raise_bad_lines(str(path), got.bad_lines)
    check_user_columns(got.frame, mapping, str(path))
    return _from_raw(got.frame, spec, str(path), settings, mode, t0, got.bad_lines,
                     named_columns(spec, mapping), sessionizer)


def with_mapping(spec: FormatSpec, mapping: ColumnMapping | None) -> FormatSpec:
    """``spec`` with ``mapping`` merged into its own (or the generic) mapping, checked whole."""
    if mapping is not None:
        spec = spec.model_copy(update={"mapping": mapping.merged_into(
            spec.mapping or GENERIC.mapping)})
    assert spec.mapping is not None
    lacking = spec.mapping.missing_fields()
    if lacking:
        raise ConfigError(f"the column mapping lacks {', '.join(lacking)}: add --map "
                          f"FIELD=COLUMN (or a --mapping file)", field=lacking[0])
    return spec


def check_user_columns(raw: pl.DataFrame, mapping: ColumnMapping | None, file: str) -> None:
    """A field the user mapped must name a column of the file (a typo is not silently unused)."""
    cols = [c for c in raw.columns if c != ROW]
    for f in sorted((mapping.model_fields_set if mapping else set()) & set(CANONICAL_FIELDS)):
        srcs = mapping.sources(f)
        if srcs and not any(c in cols for c in srcs):
            raise ConfigError(f"--map {f}={','.join(srcs)}: no such column (columns: {cols})",
                              file=file, field=f, value=",".join(srcs))

def load_records(records: Iterable[Mapping[str, Any]], *, mapping: ColumnMapping | None = None,
                 settings: Settings | None = None, mode: Mode | None = None,
                 name: str = "<records>") -> IngestResult:
    """Like :func:`load_events` for in-memory dicts (generic column names unless ``mapping``)."""
    settings = settings or default_settings()
    check_gap(settings.ingest.session_gap_minutes)
    t0 = time.perf_counter()
    raw = records_frame(records)
    spec = with_mapping(GENERIC, mapping)
    return _from_raw(raw, spec, name, settings, mode or settings.ingest.mode, t0,
                     named=named_columns(spec, mapping))

def _from_raw(raw: pl.DataFrame, spec: FormatSpec, file: str, settings: Settings, mode: Mode,
              t0: float, bad_lines: list[RowError] | None = None,
              named: set[str] | None = None,
              sessionizer: Sessionizer | None = None) -> IngestResult:
    assert spec.mapping is not None
    mapped = map_columns(raw, spec.mapping)
    typed, errors = check_types(mapped, spec.mapping)
    errs = row_errors(errors)
    max_reported = settings.ingest.max_reported_errors
    if mode == "strict" and errs:
        raise_strict(file, errs, errors[ROW].n_unique(), max_reported)
    typed = typed.filter(~pl.col(ROW).is_in(errors[ROW].implode()))

    pseudo = Pseudonymizer.from_settings(settings) if spec.pseudonymize and \
        settings.ingest.pseudonymize and typed.height else None
    typed, n_anon = assign_users(typed, pseudo)
    typed = (sessionizer or sessionize)(typed, settings.ingest.session_gap_minutes)

    resolution = resolution_of(typed["_ts"], spec.mapping.naive_zone)
    sessions, model_errors = _build_sessions(typed, spec.name, resolution, spec.mapping.timezone)
    if model_errors:
        if mode == "strict":
            raise_strict(file, model_errors, len(model_errors), max_reported)
        errs += model_errors
    errs = (bad_lines or []) + errs
    by_reason = reasons_per_row(errs)
    n_events = sum(s.n_events for s in sessions)
    report = IngestReport(
        file=file, format=spec.name, mode=mode,
        rows_read=raw.height + len(bad_lines or []), rows_ok=n_events,
        rows_skipped=sum(by_reason.values()), skipped_by_reason=by_reason,
        examples=errs[:max_reported], events=n_events,
        sessions=len(sessions), users=len({s.user_id for s in sessions}),
        **_user_counts(sessions, n_anon), time_resolution=resolution,
        unused_columns=unused_columns(raw, spec.mapping),
        unknown_columns=unknown_columns(raw, spec.mapping, named if named is not None
                                        else spec.mapping.mapped_columns()),
        gap_minutes=settings.ingest.session_gap_minutes,
        pseudonym_key_id=pseudo(KEY_CHECK) if pseudo is not None else None,
        seconds=round(time.perf_counter() - t0, 3))
    return IngestResult(sessions=sessions, report=report)


# The pseudonym of this id (no log has it) identifies the key: two loads with the same value
# map the same raw user ids to the same pseudonyms.
KEY_CHECK = "\x00behavior-rag key check"

# A gap of a year already makes each shopper one session; past it the gap in milliseconds
# overflows the duration type (--gap-minutes 1e308 was a traceback).
MAX_GAP_MINUTES = 366 * 24 * 60


def named_columns(spec: FormatSpec, mapping: ColumnMapping | None) -> set[str]:
    """The columns a load means to read: all of a built-in adapter's; for the generic mapping
    only those the user named (its own defaults are guesses, not expectations)."""
    if spec.name != GENERIC.name:
        assert spec.mapping is not None
        return spec.mapping.mapped_columns()
    if mapping is None:
        return set()
    return {c for f in mapping.model_fields_set & set(CANONICAL_FIELDS) for c in mapping.sources(f)}


def _user_counts(sessions: list[Session], n_anon: int) -> dict[str, Any]:
    """Known users and anonymous sessions, counted on the sessions written."""
    anon = [s for s in sessions if is_anonymous(s.user_id)] if n_anon else []
    known = {s.user_id for s in sessions if not (n_anon and is_anonymous(s.user_id))}
    return {"users_known": not anon, "known_users": len(known),
            "known_user_sessions": len(sessions) - len(anon), "anonymous_sessions": len(anon)}


def check_gap(gap_minutes: float) -> None:
    """Raise :class:`ConfigError` unless the session gap is a number of minutes in
    (0, :data:`MAX_GAP_MINUTES`]."""
    if not (isinstance(gap_minutes, (int, float)) and not isinstance(gap_minutes, bool)
            and math.isfinite(gap_minutes) and 0 < gap_minutes <= MAX_GAP_MINUTES):
        raise ConfigError(f"the session gap must be a number of minutes > 0 and <= "
                          f"{MAX_GAP_MINUTES} (a year); 30 is the usual", field="gap_minutes",
                          value=str(gap_minutes))


def _attr_value(v: str) -> str | int | float:
    # Attributes arrive as text; numbers become numbers so facts and renders can use them.
    try:
        return int(v)
    except ValueError:
        try:
            f = float(v)
            return f if f == f and f not in (float("inf"), float("-inf")) else v
        except ValueError:
            return v

def _build_sessions(typed: pl.DataFrame, source: str, resolution: TimeResolution | None,
                    zone: str | None) -> tuple[list[Session], list[RowError]]:
    attr_cols = [c for c in typed.columns if c.startswith("a:")]
    cols = ["sid", ROW, "user_id", "_ts", "_type", "item_id", "category", "brand", "_price",
            "query", *attr_cols]
    frame = typed.select(cols).sort(["user_id", "_ts", ROW])
    first_seen = frame.group_by("sid", maintain_order=True).agg(pl.col(ROW).first())
    order = {sid: i for i, sid in enumerate(first_seen["sid"].to_list())}
    grouped: dict[str, list[Event]] = {}
    users: dict[str, str] = {}
    errors: list[RowError] = []
    for r in frame.iter_rows(named=True):
        attrs = {c[2:]: _attr_value(r[c]) for c in attr_cols if r[c] is not None}
        try:
            ev = Event(user_id=r["user_id"], session_id=r["sid"], timestamp=r["_ts"],
                       type=r["_type"], item_id=r["item_id"], category=r["category"],
                       brand=r["brand"], price=r["_price"], query=r["query"], attrs=attrs)
        except ValidationError as e:
            err = e.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "?"
            errors.append(RowError(row=r[ROW], field=field, value=str(err.get("input"))[:200],
                                   reason="invalid", message=err["msg"]))
            continue
        grouped.setdefault(r["sid"], []).append(ev)
        users[r["sid"]] = r["user_id"]
    sessions = []
    for sid, evs in sorted(grouped.items(), key=lambda kv: order[kv[0]]):
        if len(evs) > MAX_EVENTS:  # a crawler, not a shopper: its rows are row errors
            first = int(first_seen.filter(pl.col("sid") == sid)[ROW][0])
            errors.append(RowError(row=first, field="session_id", value=sid[:200],
                                   reason="too_many_events",
                                   message=f"session has {len(evs)} events; at most "
                                   f"{MAX_EVENTS} (bounds.MAX_EVENTS)"))
            continue
        sessions.append(Session(session_id=sid, user_id=users[sid], events=evs, source=source,
                                time_resolution=resolution, timezone=zone))
    return sessions, errors
