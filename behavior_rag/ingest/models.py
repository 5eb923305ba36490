"""Types of the ingest step: column mappings, format specs, row errors and the ingest report.

Example:
    >>> m = ColumnMapping(user_id="uid", timestamp="ts", event_type="action", item_id="sku",
    ...                   timestamp_format="unix_s", type_map={"click": "view", "order": "purchase"})
    >>> m.sources("category")
    []
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from behavior_rag.types import EVENT_TYPES, Session, TimeResolution, check_timezone

ROW = "__row"  # the 1-based data row column every reader adds
CANONICAL_FIELDS = ("user_id", "session_id", "timestamp", "event_type", "item_id", "category",
                    "brand", "price", "query")
# user_id is required unless the row has a session id (session-only logs: one anonymous user
# per session).
REQUIRED_FIELDS = ("timestamp", "event_type")
DEFAULT_NULLS = ("NA", "null")
# An event log has a few dozen columns; past this a file is refused before its rows are parsed
# (a 10,000-column file would otherwise take minutes to reach its per-row attrs errors).
MAX_COLUMNS = 1_000


class ColumnMapping(BaseModel):
    """Which source column(s) feed each event field.

    A field may name several columns: the first non-empty one wins (REES46's readable
    ``category_code`` falls back to ``category_id``). ``event_type`` may be a constant via
    ``event_type_constant`` for logs that hold one kind of event (CDNOW: purchases).
    ``user_id`` may be left out for session-only logs: each session then gets its own
    pseudonymous user, and the report says users are unknown. A mapping built from a few
    fields (``--map``) is laid over the detected or generic one (:meth:`merged_into`).
    """

    model_config = ConfigDict(extra="forbid")

    user_id: str | list[str] | None = None
    timestamp: str | list[str] | None = None
    event_type: str | list[str] | None = None
    event_type_constant: Literal["view", "search", "cart", "remove_from_cart", "fav",
                                 "purchase"] | None = None
    session_id: str | list[str] | None = None
    item_id: str | list[str] | None = None
    category: str | list[str] | None = None
    brand: str | list[str] | None = None
    price: str | list[str] | None = None
    query: str | list[str] | None = None
    timestamp_format: str = Field("auto", description="'unix_s', 'unix_ms', 'iso', 'auto' "
                                  "(numbers are unix seconds, else ISO 8601), or a strftime "
                                  "format such as '%Y%m%d'.")
    timezone: str | None = Field(None, description="IANA zone the source's shoppers live in "
                                 "(Taobao: Asia/Shanghai): time-of-day and weekday facts are "
                                 "computed there, and naive times are read as local times there "
                                 "unless timestamp_zone says otherwise. None: UTC.")
    timestamp_zone: str | None = Field(None, description="Zone of the file's naive timestamps "
                                       "when it differs from timezone (REES46 logs UTC times of "
                                       "shoppers elsewhere). Unix times and times with an offset "
                                       "are absolute and ignore it.")
    type_map: dict[str, str] = Field(default_factory=dict, description="Source value -> event "
                                     "type; values already equal to an event type pass through.")
    attrs: list[str] | Literal["rest"] = Field("rest", description="Columns kept in Event.attrs: "
                                               "a list, or 'rest' for every unmapped column.")

    @field_validator("timezone", "timestamp_zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return check_timezone(v)

    @property
    def naive_zone(self) -> str:
        """The zone naive timestamps of the file are read in."""
        return self.timestamp_zone or self.timezone or "UTC"

    @field_validator("type_map")
    @classmethod
    def _known_targets(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(v.values()) - set(EVENT_TYPES))
        if bad:
            raise ValueError(f"type_map targets must be one of {EVENT_TYPES}, got {bad}")
        return v

    def sources(self, field: str) -> list[str]:
        v = getattr(self, field)
        return [] if v is None else [v] if isinstance(v, str) else list(v)

    def mapped_columns(self) -> set[str]:
        return {c for f in CANONICAL_FIELDS for c in self.sources(f)}

    def merged_into(self, base: ColumnMapping) -> ColumnMapping:
        """``base`` with the fields set here replacing its own; a column this mapping claims
        is dropped from the base's other fields (so it is never read twice)."""
        mine = {f: getattr(self, f) for f in self.model_fields_set}
        claimed = {c for f in self.model_fields_set & set(CANONICAL_FIELDS)
                   for c in self.sources(f)}
        update = {}
        for f in set(CANONICAL_FIELDS) - self.model_fields_set:
            kept = [c for c in base.sources(f) if c not in claimed]
            if kept != base.sources(f):
                update[f] = kept or None
        return base.model_copy(update=update | mine)

    def missing_fields(self) -> list[str]:
        """Fields every mapping needs but this one lacks."""
        out = [] if self.timestamp else ["timestamp"]
        if not (self.event_type or self.event_type_constant):
            out.append("event_type")
        if not (self.user_id or self.session_id):
            out.append("user_id or session_id")
        return out


class FormatSpec(BaseModel):
    """How to read one source format: file type, parsing options and the column mapping."""

    model_config = ConfigDict(extra="forbid")

    name: str
    file_type: Literal["csv", "jsonl", "parquet", "whitespace"] = "csv"
    kind: Literal["events", "aggregate"] = "events"
    separator: str | None = Field(None, description="CSV delimiter; None: sniffed from the head.")
    null_values: list[str] = Field(default_factory=lambda: list(DEFAULT_NULLS), description=
                                   "Cell values read as missing in every column (blank always is).")
    column_nulls: dict[str, list[str]] = Field(default_factory=dict, description="Extra missing-"
                                               "value tokens for one column each.")
    has_header: bool = True
    columns: list[str] | None = Field(None, description="Column names for headerless files; for "
                                      "'whitespace' files, keyed by field count via alt_columns.")
    alt_columns: dict[int, list[str]] = Field(default_factory=dict)
    events_path: str | None = Field(None, description="JSONL/Parquet column holding each "
                                    "session's list of events (exploded to one row per event); "
                                    "None: the only list-of-objects column, if any.")
    mapping: ColumnMapping | None = None
    pseudonymize: bool = True


class ReadOptions(BaseModel):
    """How to read one file beyond its format (the CLI's ``--delimiter``, ``--null``).

    ``null_values`` None keeps the format's tokens (``NA``, ``null``; blank is always missing).
    """

    model_config = ConfigDict(extra="forbid")

    delimiter: str | None = None
    null_values: list[str] | None = None
    column_nulls: dict[str, list[str]] = Field(default_factory=dict)
    events_path: str | None = None
    timezone: str | None = Field(None, description="The shoppers' zone (see "
                                 "ColumnMapping.timezone), overriding the format's.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return check_timezone(v)

    def apply(self, spec: FormatSpec) -> FormatSpec:
        """``spec`` with these options laid over it."""
        update: dict = {"column_nulls": spec.column_nulls | self.column_nulls}
        if self.delimiter is not None:
            update["separator"] = self.delimiter
        if self.null_values is not None:
            update["null_values"] = self.null_values
        if self.events_path is not None:
            update["events_path"] = self.events_path
        return spec.model_copy(update=update)

    def zoned(self, spec: FormatSpec) -> FormatSpec:
        """``spec`` with ``timezone`` on its (merged) mapping: the flag beats the mapping."""
        if self.timezone is None or spec.mapping is None:
            return spec
        return spec.model_copy(update={"mapping": spec.mapping.model_copy(
            update={"timezone": self.timezone})})


class RowError(BaseModel):
    """One rejected row: where, which field, what value, why."""

    row: int = Field(description="1-based data row (header not counted).")
    line: int | None = Field(None, description="1-based line of the file, for lines that "
                             "could not be read at all (reason 'malformed_line').")
    field: str
    value: str | None
    reason: str
    message: str

    @model_validator(mode="after")
    def _no_raw_user_ids(self) -> RowError:
        # reports and errors are written to manifests and logs: a raw user id never is
        if self.field == "user_id" and self.value is not None:
            self.value = USER_ID_WITHHELD
        return self


USER_ID_WITHHELD = "<user id withheld>"


class RawRead(BaseModel):
    """A file read as text: every column Utf8 plus ``__row``, and the lines that could not be
    read (a stray quote, an extra field, bad JSON), each naming its line."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    frame: pl.DataFrame
    bad_lines: list[RowError] = Field(default_factory=list)


class AppendReport(BaseModel):
    """What ``ingest --append`` did with one file's events (the :class:`IngestReport` above
    says what the file held)."""

    store: str
    gap_minutes: float = Field(description="The gap used to join events without a session id.")
    events_joined: int = Field(0, description="Events added to sessions already in the store.")
    events_joined_by_session_id: int = Field(0, description="... of them by source session id.")
    events_joined_by_gap: int = Field(0, description="... of them by user within the gap.")
    events_in_new_sessions: int = Field(0, description="Events that started new sessions.")
    sessions_touched: int = Field(0, description="Existing sessions that gained events.")
    sessions_new: int = Field(0, description="Sessions the file started.")
    bridging_runs: int = Field(0, description="Runs of events (no session id) within the gap of "
                               "two or more existing sessions: each event joined the nearest "
                               "one; existing sessions are never merged.")
    duplicates_dropped: int = Field(0, description="Events exactly equal to one already in "
                                    "their session (a file appended twice adds nothing).")
    near_duplicates_kept: int = Field(0, description="Events with the same time, type and item "
                                      "as one already in their session but differing in another "
                                      "field (price, attrs): kept, counted here.")
    store_sessions: int = Field(0, description="Sessions in the store after the append.")
    store_events: int = Field(0, description="Events in the store after the append.")


class IngestReport(BaseModel):
    """What a load read, kept and skipped (counts per reason) — printed by ``behavior-rag ingest``."""

    file: str
    format: str
    mode: Literal["strict", "lenient"]
    rows_read: int
    rows_ok: int
    rows_skipped: int = 0
    skipped_by_reason: dict[str, int] = Field(default_factory=dict)
    examples: list[RowError] = Field(default_factory=list)
    events: int = 0
    sessions: int = 0
    users: int = Field(0, description="Distinct user ids in the sessions written, counting "
                       "each anonymous session's own user: known_users + anonymous_sessions.")
    users_known: bool = Field(True, description="False when the log has no user ids (for some "
                              "or all rows): those sessions each got their own anonymous user "
                              "('anon_…'), so profiles and similar users say nothing about people.")
    known_users: int = Field(0, description="Distinct real (pseudonymised) user ids.")
    known_user_sessions: int = Field(0, description="Sessions whose rows carry a user id.")
    anonymous_sessions: int = Field(0, description="Sessions without a user id, each given its "
                                    "own anonymous user ('anon_…'): not people.")
    time_resolution: TimeResolution | None = Field(None, description="How finely the file "
                                                   "records times: day, second or millisecond.")
    unused_columns: list[str] = Field(default_factory=list, description="File columns neither "
                                      "mapped nor kept in attrs.")
    unknown_columns: list[str] = Field(default_factory=list, description="Columns the mapping "
                                       "names that the file does not have: a built-in "
                                       "adapter's, or those you mapped (the generic mapping's "
                                       "default names are guesses and not listed).")
    gap_minutes: float | None = Field(None, description="The inactivity gap that cut sessions "
                                      "without a source session id (--append reuses it).")
    pseudonym_key_id: str | None = Field(None, description="A keyed check value of the "
                                         "pseudonym key (not a user id; None: raw ids kept): "
                                         "--append refuses a file read with another key, whose "
                                         "users could never match the store's.")
    seconds: float = 0.0
    append: AppendReport | None = Field(None, description="With --append: what the file "
                                        "changed in the store it joined.")


class IngestResult(BaseModel):
    sessions: list[Session]
    report: IngestReport
