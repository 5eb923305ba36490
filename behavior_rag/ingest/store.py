"""The session store: a folder with ``events.parquet``, ``sessions.parquet`` and ``manifest.json``.

Writes are atomic: everything goes to a temp folder beside the target (fsynced), which then
replaces the target by rename, so a crash leaves either the old store or the new one, never a mix.
Attribute and aggregate dicts are stored as JSON text (never pickle).

Example:
    >>> import tempfile
    >>> from behavior_rag.synth import generate
    >>> d = tempfile.mkdtemp()
    >>> _ = write_store(generate(10, seed=1).sessions, d + "/s")
    >>> len(read_store(d + "/s"))
    10
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ValidationError

from behavior_rag.atomic import replace_dir
from behavior_rag.errors import StoreError
from behavior_rag.types import Event, Session

FORMAT_VERSION = 1
EVENT_SCHEMA = {"session_id": pl.Utf8, "idx": pl.Int32, "user_id": pl.Utf8,
                "timestamp": pl.Datetime("ms", "UTC"), "type": pl.Utf8, "item_id": pl.Utf8,
                "category": pl.Utf8, "brand": pl.Utf8, "price": pl.Float64, "query": pl.Utf8,
                "attrs": pl.Utf8}
SESSION_SCHEMA = {"session_id": pl.Utf8, "user_id": pl.Utf8, "label": pl.Utf8, "source": pl.Utf8,
                  "n_events": pl.Int32, "aggregates": pl.Utf8, "time_resolution": pl.Utf8,
                  "timezone": pl.Utf8}


class StoreManifest(BaseModel):
    format_version: int = FORMAT_VERSION
    sessions: int
    events: int
    users: int
    labels: dict[str, int]
    created: datetime
    info: dict[str, Any] = {}


def write_store(sessions: list[Session], path: str | Path, info: dict[str, Any] | None = None
                ) -> StoreManifest:
    """Write sessions to a store folder atomically (replacing any store already there)."""
    path = Path(path)
    events_rows: dict[str, list[Any]] = {k: [] for k in EVENT_SCHEMA}
    for s in sessions:
        for i, e in enumerate(s.events):
            for k, v in (("session_id", s.session_id), ("idx", i), ("user_id", e.user_id),
                         ("timestamp", e.timestamp), ("type", e.type), ("item_id", e.item_id),
                         ("category", e.category), ("brand", e.brand), ("price", e.price),
                         ("query", e.query),
                         ("attrs", json.dumps(e.attrs, sort_keys=True) if e.attrs else None)):
                events_rows[k].append(v)
    events = pl.DataFrame(events_rows, schema=EVENT_SCHEMA)
    sess = pl.DataFrame({
        "session_id": [s.session_id for s in sessions], "user_id": [s.user_id for s in sessions],
        "label": [s.label for s in sessions], "source": [s.source for s in sessions],
        "n_events": [s.n_events for s in sessions],
        "aggregates": [json.dumps(s.aggregates, sort_keys=True) if s.aggregates else None
                       for s in sessions],
        "time_resolution": [s.time_resolution for s in sessions],
        "timezone": [s.timezone for s in sessions]}, schema=SESSION_SCHEMA)
    labels: dict[str, int] = {}
    for s in sessions:
        if s.label is not None:
            labels[s.label] = labels.get(s.label, 0) + 1
    manifest = StoreManifest(sessions=len(sessions), events=events.height,
                             users=len({s.user_id for s in sessions}), labels=labels,
                             created=datetime.now(timezone.utc), info=info or {})
    check_store_target(path)
    with replace_dir(path) as tmp:
        events.write_parquet(tmp / "events.parquet")
        sess.write_parquet(tmp / "sessions.parquet")
        (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return manifest


def check_store_target(path: str | Path) -> None:
    """Raise :class:`StoreError` unless ``path`` can become a store: absent (below folders),
    an empty folder, or a store folder (which is then replaced)."""
    path = Path(path)
    up = next((p for p in (path, *path.parents) if p.exists()), None)
    if up is not None and not up.is_dir():
        what = "is a file" if up == path else f"is inside {str(up)!r}, which is a file"
        raise StoreError(f"the store path {what}: give a folder (new, empty, or a session store)",
                         file=str(path), field="out")
    if path.is_dir() and not (path / "manifest.json").exists() and any(path.iterdir()):
        raise StoreError("refusing to replace a folder that is not a session store",
                         file=str(path), field="out")


def read_store(path: str | Path) -> list[Session]:
    """Read every session of a store folder back, events in order."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest.format_version != FORMAT_VERSION:
        raise StoreError(f"store format {manifest.format_version} is not supported (expected "
                         f"{FORMAT_VERSION})", file=str(path))
    try:
        events = pl.read_parquet(path / "events.parquet").sort(["session_id", "idx"])
        sess = pl.read_parquet(path / "sessions.parquet")
    except (OSError, pl.exceptions.PolarsError) as e:
        raise StoreError(f"cannot read store: {e}", file=str(path)) from e
    by_session: dict[str, list[Event]] = {}
    try:
        for r in events.iter_rows(named=True):
            attrs = json.loads(r["attrs"]) if r["attrs"] else {}
            by_session.setdefault(r["session_id"], []).append(Event(
                user_id=r["user_id"], session_id=r["session_id"], timestamp=r["timestamp"],
                type=r["type"], item_id=r["item_id"], category=r["category"], brand=r["brand"],
                price=r["price"], query=r["query"], attrs=attrs))
        return [Session(session_id=r["session_id"], user_id=r["user_id"], label=r["label"],
                        source=r["source"], events=by_session.get(r["session_id"], []),
                        aggregates=json.loads(r["aggregates"]) if r["aggregates"] else {},
                        # absent in older stores
                        time_resolution=r.get("time_resolution"), timezone=r.get("timezone"))
                for r in sess.iter_rows(named=True)]
    except (ValidationError, json.JSONDecodeError) as e:
        raise StoreError(f"store holds invalid data: {e}", file=str(path)) from e


def read_manifest(path: str | Path) -> StoreManifest:
    path = Path(path)
    try:
        return StoreManifest.model_validate_json((path / "manifest.json").read_text())
    except FileNotFoundError as e:
        raise StoreError("not a session store (no manifest.json)", file=str(path)) from e
    except ValidationError as e:
        raise StoreError(f"invalid manifest: {e}", file=str(path)) from e


class SessionStore:
    """Read access to a store folder by id (being replaced by a segmented store; same API).

    Example:
        >>> import tempfile
        >>> from behavior_rag.synth import generate
        >>> d = tempfile.mkdtemp()
        >>> _ = write_store(generate(10, seed=1).sessions, d + "/s")
        >>> st = open_store(d + "/s")
        >>> len(st), st.get_many(st.ids()[:2])[0].session_id == st.ids()[0]
        (10, True)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._by_id = {s.session_id: s for s in read_store(self.path)}

    def __len__(self) -> int:
        return len(self._by_id)

    def ids(self) -> list[str]:
        return list(self._by_id)

    def get_many(self, ids: list[str]) -> list[Session]:
        """The sessions with these ids, in that order (unknown ids are skipped)."""
        return [self._by_id[i] for i in ids if i in self._by_id]


def open_store(path: str | Path) -> SessionStore:
    return SessionStore(path)
