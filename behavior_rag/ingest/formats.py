"""Built-in adapters for the public formats we support, and format detection from a file's head.

Example:
    >>> FORMATS["taobao"].mapping.type_map["pv"]
    'view'
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from behavior_rag.errors import ConfigError
from behavior_rag.ingest.models import ColumnMapping, FormatSpec
from behavior_rag.ingest.sniff import HEAD_LINES, file_type, head_lines, sniff_delimiter

# Taobao's shoppers are in China: unix times, local clock UTC+8 (the dataset's own description).
TAOBAO = FormatSpec(
    name="taobao",
    mapping=ColumnMapping(
        user_id="user_id", timestamp="timestamp", event_type="behavior_type", item_id="item_id",
        category="category_id", timestamp_format="unix_s", timezone="Asia/Shanghai",
        type_map={"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}, attrs=[],
    ),
)

REES46 = FormatSpec(
    name="rees46",
    mapping=ColumnMapping(
        user_id="user_id", session_id="user_session", timestamp="event_time",
        event_type="event_type", item_id="product_id", category=["category_code", "category_id"],
        brand="brand", price="price", timestamp_format="%Y-%m-%d %H:%M:%S UTC",
        timestamp_zone="UTC",
        type_map={"view": "view", "cart": "cart", "remove_from_cart": "remove_from_cart",
                  "purchase": "purchase"},
        attrs=["category_id"],
    ),
)

# CDNOW ships as whitespace-aligned text: the master file has a 4-column header; the 10 % sample
# has no header and an extra sample-id column. Price is per CD; the order total stays in attrs.
CDNOW = FormatSpec(
    name="cdnow",
    file_type="whitespace",
    has_header=False,
    alt_columns={4: ["customer_id", "date", "number_of_cds", "dollar_value"],
                 5: ["customer_id", "sample_id", "date", "number_of_cds", "dollar_value"]},
    mapping=ColumnMapping(
        user_id="customer_id", timestamp="date", event_type_constant="purchase",
        price="unit_price", timestamp_format="%Y%m%d", attrs=["number_of_cds", "dollar_value"],
    ),
)

# UCI online shoppers: one aggregate row per session, no events (see ingest.uci).
UCI = FormatSpec(name="uci", kind="aggregate", pseudonymize=False)

# OTTO (otto-de/recsys-dataset): JSONL, one session per line with its events; no user ids, so
# each session gets its own anonymous user. Timestamps are unix milliseconds.
OTTO = FormatSpec(
    name="otto",
    file_type="jsonl",
    events_path="events",
    mapping=ColumnMapping(
        session_id="session", timestamp="ts", event_type="type", item_id="aid",
        timestamp_format="unix_ms",
        type_map={"clicks": "view", "carts": "cart", "orders": "purchase"}, attrs=[],
    ),
)

GENERIC = FormatSpec(
    name="generic",
    mapping=ColumnMapping(user_id="user_id", session_id="session_id", timestamp="timestamp",
                          event_type="event_type", item_id="item_id", category="category",
                          brand="brand", price="price", query="query"),
)

FORMATS: dict[str, FormatSpec] = {f.name: f for f in (TAOBAO, REES46, CDNOW, UCI, OTTO,
                                                        GENERIC)}

_HEADERS = {
    "taobao": {"user_id", "item_id", "category_id", "behavior_type", "timestamp"},
    "rees46": {"event_time", "event_type", "product_id", "user_session"},
    "uci": {"Administrative", "ProductRelated_Duration", "PageValues", "Revenue"},
}


def detect_format(path: Path) -> FormatSpec:
    """Guess the format from the file's first line; 'generic' for our own column names."""
    head = head_lines(path, HEAD_LINES)
    kind = file_type(path, head)
    if kind == "jsonl" and head and _is_otto(head[0]):
        return OTTO
    if kind != "csv":
        return GENERIC.model_copy(update={"file_type": kind})
    first = head[0].strip() if head else ""
    sep = sniff_delimiter(head)
    cols = set(header_columns(first, sep))
    for name, needed in _HEADERS.items():
        if needed <= cols:
            return FORMATS[name].model_copy(update={"separator": sep})
    tokens = first.split()
    if first.startswith("customer_id") or (tokens and len(tokens) in (4, 5)
                                           and all(t.replace(".", "").isdigit() for t in tokens)):
        return CDNOW
    if {"timestamp", "event_type"} <= cols and cols & {"user_id", "session_id"}:
        return GENERIC.model_copy(update={"separator": sep})
    raise ConfigError("cannot tell the format of this file: pass --format (taobao, rees46, cdnow, "
                      "uci, generic, otto) or a column mapping (--map FIELD=COLUMN or --mapping "
                      "FILE; `behavior-rag ingest FILE --inspect` proposes one)", file=str(path),
                      header=first[:200], delimiter=sep)


def _is_otto(line: str) -> bool:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return False
    if not isinstance(rec, dict):  # a bare number or list: not OTTO (the reader says why)
        return False
    evs = rec.get("events")
    return "session" in rec and isinstance(evs, list) and bool(evs) and isinstance(
        evs[0], dict) and {"aid", "ts", "type"} <= set(evs[0])


def header_columns(line: str, sep: str) -> list[str]:
    """Column names of a header line split on ``sep`` (quotes and blanks stripped)."""
    try:
        cells = next(csv.reader([line], delimiter=sep))
    except (csv.Error, StopIteration):
        cells = line.split(sep)
    return [c.strip() for c in cells]


def resolve_format(fmt: str | FormatSpec | None, path: Path, *,
                   mapping_given: bool = False) -> FormatSpec:
    """The spec for ``--format fmt``: detected for ``auto`` (generic when a mapping is given
    and nothing else fits), a built-in adapter by name, or ``fmt`` itself."""
    if isinstance(fmt, FormatSpec):
        return fmt
    if fmt in (None, "auto"):
        try:
            return detect_format(path)
        except ConfigError:
            if not mapping_given:
                raise
            fmt = "generic"
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}", field="format",
                          value=fmt)
    spec = FORMATS[fmt]
    if fmt == "generic":
        spec = spec.model_copy(update={"file_type": file_type(path, head_lines(path, 1))})
    return spec
