"""Types of the ingest step: column mappings, format specs, row errors and the ingest report.

Example:
    >>> m = ColumnMapping(user_id="uid", timestamp="ts", event_type="action", item_id="sku",
    ...                   timestamp_format="unix_s", type_map={"click": "view", "order": "purchase"})
    >>> m.sources("category")
    []
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from behavior_rag.types import EVENT_TYPES, Session

CANONICAL_FIELDS = ("user_id", "session_id", "timestamp", "event_type", "item_id", "category",
                    "brand", "price", "query")
REQUIRED_FIELDS = ("user_id", "timestamp", "event_type")
DEFAULT_NULLS = ("NA", "null")


class ColumnMapping(BaseModel):
    """Which source column(s) feed each event field.

    A field may name several columns: the first non-empty one wins (REES46's readable
    ``category_code`` falls back to ``category_id``). ``event_type`` may be a constant via
    ``event_type_constant`` for logs that hold one kind of event (CDNOW: purchases).
    """

    model_config = ConfigDict(extra="forbid")

    user_id: str | list[str]
    timestamp: str | list[str]
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
    type_map: dict[str, str] = Field(default_factory=dict, description="Source value -> event "
                                     "type; values already equal to an event type pass through.")
    attrs: list[str] | Literal["rest"] = Field("rest", description="Columns kept in Event.attrs: "
                                               "a list, or 'rest' for every unmapped column.")

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

    def apply(self, spec: FormatSpec) -> FormatSpec:
        """``spec`` with these options laid over it."""
        update: dict = {"column_nulls": spec.column_nulls | self.column_nulls}
        if self.delimiter is not None:
            update["separator"] = self.delimiter
        if self.null_values is not None:
            update["null_values"] = self.null_values
        return spec.model_copy(update=update)


class RowError(BaseModel):
    """One rejected row: where, which field, what value, why."""

    row: int = Field(description="1-based data row (header not counted).")
    field: str
    value: str | None
    reason: str
    message: str


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
    users: int = 0
    seconds: float = 0.0


class IngestResult(BaseModel):
    sessions: list[Session]
    report: IngestReport
