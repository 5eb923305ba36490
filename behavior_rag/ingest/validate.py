"""Map raw columns to event fields and type-check them, column by column, with polars.

Returns the typed frame and a frame of row errors ``(row, field, value, reason, message)``; the
caller decides (strict/lenient) what to do with them. Vectorised so a 60k-row log validates in
well under a second.
"""

from __future__ import annotations

import polars as pl

from behavior_rag.bounds import MAX_ATTRS
from behavior_rag.errors import ConfigError
from behavior_rag.ingest.models import CANONICAL_FIELDS, REQUIRED_FIELDS, ColumnMapping
from behavior_rag.ingest.readers import ROW
from behavior_rag.types import EVENT_TYPES, TimeResolution

ERROR_SCHEMA = {ROW: pl.Int64, "field": pl.Utf8, "value": pl.Utf8, "reason": pl.Utf8,
                "message": pl.Utf8}
REPLACEMENT_CHAR = "\ufffd"


def map_columns(raw: pl.DataFrame, mapping: ColumnMapping) -> pl.DataFrame:
    """Raw frame -> frame with canonical string columns (+ ``attrs`` columns prefixed ``a:``)."""
    present = [c for c in raw.columns if c != ROW]
    lacking = [f for f in ("user_id", *REQUIRED_FIELDS) if not _has_source(f, mapping, present)]
    if lacking:
        hints = ["map them with --map FIELD=COLUMN"]
        if "event_type" in lacking:
            hints.append("a log without an event type column (every row a view) takes --map "
                         "event_type_constant=view")
        if "user_id" in lacking:
            hints.append("a log without user ids needs a session id column")
        hints.append("`behavior-rag ingest FILE --inspect` proposes a whole mapping")
        raise ConfigError(
            f"the column(s) for required field(s) {lacking} are not in the file (looked for "
            f"{ {f: mapping.sources(f) for f in lacking} }; columns: {present[:50]}): "
            + "; ".join(hints), field=lacking[0])
    attrs = attr_columns(present, mapping)
    if len(attrs) > MAX_ATTRS:  # each row would fail on its attrs: say it once, up front
        raise ConfigError(
            f"{len(attrs)} columns would be kept as event attributes (attrs: rest keeps every "
            f"unmapped column); at most {MAX_ATTRS}: list the ones to keep (attrs: [a, b] in a "
            "--mapping file) or attrs: []", field="attrs", value=", ".join(attrs[:5]) + ", ...")
    # Source columns by position: pl.col(name) reads a name like "^...$" as a regex.
    pos = {c: i for i, c in enumerate(raw.columns)}
    exprs = [pl.col(ROW)]
    for field in CANONICAL_FIELDS:
        cols = [c for c in mapping.sources(field) if c in raw.columns]
        if field == "event_type" and mapping.event_type_constant:
            exprs.append(pl.lit(mapping.event_type_constant).alias(field))
        elif cols:
            exprs.append(pl.coalesce(pl.nth(pos[c]) for c in cols).alias(field))
        else:
            exprs.append(pl.lit(None, pl.Utf8).alias(field))
    exprs += [pl.nth(pos[c]).alias(f"a:{c}") for c in attrs]
    return raw.select(exprs)


def _has_source(f: str, mapping: ColumnMapping, present: list[str]) -> bool:
    if f == "event_type" and mapping.event_type_constant:
        return True
    found = any(c in present for c in mapping.sources(f))
    if f == "user_id":  # no user column but a session id: one anonymous user per session
        return found or any(c in present for c in mapping.sources("session_id"))
    return found


def attr_columns(columns: list[str], mapping: ColumnMapping) -> list[str]:
    """The file's columns kept in ``Event.attrs``."""
    if mapping.attrs == "rest":
        return [c for c in columns if c not in mapping.mapped_columns()]
    return [c for c in mapping.attrs if c in columns]


def unused_columns(raw: pl.DataFrame, mapping: ColumnMapping) -> list[str]:
    """The file's columns that feed no field and no attribute (reported, never an error)."""
    cols = [c for c in raw.columns if c != ROW]
    used = mapping.mapped_columns() | set(attr_columns(cols, mapping))
    return [c for c in cols if c not in used]


def unknown_columns(raw: pl.DataFrame, mapping: ColumnMapping, named: set[str]) -> list[str]:
    """Columns the mapping names that the file lacks, among ``named`` (the columns the user's
    mapping or a built-in adapter names; the generic mapping's default names are guesses, and a
    field fed by a constant reads no column)."""
    used = set(named)
    if mapping.event_type_constant:
        used -= set(mapping.sources("event_type"))
    return sorted(used - set(raw.columns))


def check_types(df: pl.DataFrame, mapping: ColumnMapping) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed frame (timestamp as UTC datetime, price as float) and the row errors found."""
    text_cols = [c for c in df.columns if c != ROW]
    ts = parse_timestamp(pl.col("timestamp"), mapping.timestamp_format, mapping.naive_zone)
    etype = pl.col("event_type").replace(mapping.type_map) if mapping.type_map \
        else pl.col("event_type")
    typed = df.with_columns(
        ts.alias("_ts"),
        etype.alias("_type"),
        pl.col("price").cast(pl.Float64, strict=False).alias("_price"),
    )
    checks: list[tuple[str, pl.Expr, str, str]] = []
    for c in text_cols:
        checks.append((c, pl.col(c).str.contains(REPLACEMENT_CHAR, literal=True),
                       "invalid_utf8", "contains bytes that are not valid UTF-8"))
    checks.append(("user_id", pl.col("user_id").is_null() & pl.col("session_id").is_null(),
                   "missing", "required field 'user_id' is empty and the row has no session id"))
    for f in REQUIRED_FIELDS:
        checks.append((f, pl.col(f).is_null(), "missing", f"required field {f!r} is empty"))
    checks += [
        ("timestamp", pl.col("timestamp").is_not_null() & pl.col("_ts").is_null(), "bad_timestamp",
         f"not a timestamp in format {mapping.timestamp_format!r}"),
        ("event_type", pl.col("_type").is_not_null() & ~pl.col("_type").is_in(EVENT_TYPES),
         "unknown_event_type", f"unknown event type; expected one of {EVENT_TYPES}"
         + (f" or a source value in {sorted(mapping.type_map)}" if mapping.type_map else "")
         + "; say what a source value means with a type_map (CLI: --type-map VALUE=TYPE)"),
        ("price", pl.col("price").is_not_null() & pl.col("_price").is_null(), "wrong_type",
         "price is not a number"),
        ("price", pl.col("_price").is_not_null() & ~pl.col("_price").is_finite(), "wrong_type",
         "price must be a finite number"),
        ("price", pl.col("_price").is_finite() & (pl.col("_price") < 0), "negative_price",
         "price must be >= 0"),
    ]
    frames = [
        typed.filter(cond).select(
            pl.col(ROW), pl.lit(field).alias("field"),
            pl.col(field if field in typed.columns else field).cast(pl.Utf8).alias("value"),
            pl.lit(reason).alias("reason"), pl.lit(msg).alias("message"))
        for field, cond, reason, msg in checks
    ]
    errors = pl.concat(frames).sort(ROW, maintain_order=True) if frames \
        else pl.DataFrame(schema=ERROR_SCHEMA)
    # Report bad UTF-8 with the field name the user knows (their column, not ours).
    errors = errors.with_columns(pl.col("field").str.replace(r"^a:", ""))
    return typed, errors


def parse_timestamp(col: pl.Expr, fmt: str, zone: str = "UTC") -> pl.Expr:
    """Text -> UTC datetime (ms) in ``fmt``; null where it does not parse or is out of range.

    Naive times (no offset in the text) are local times in ``zone``; unix times are absolute.
    """
    out = _parse_any(col, fmt, zone)
    # Years outside 1970..2100 are almost always a unit mix-up (ms read as s) or garbage, and
    # far-out years cannot even become Python datetimes.
    return pl.when(out.dt.year().is_between(1970, 2100)).then(out).otherwise(None)


def resolution_of(ts: pl.Series, zone: str = "UTC") -> TimeResolution | None:
    """``day`` when every time is midnight in ``zone`` (the file's naive times' zone),
    ``millisecond`` when some carry milliseconds, else ``second``; None for no times."""
    ts = ts.drop_nulls().dt.convert_time_zone(zone)
    if ts.is_empty():
        return None
    if (ts.dt.truncate("1d") == ts).all():
        return "day"
    return "millisecond" if (ts.dt.millisecond() != 0).any() else "second"


def _parse_any(col: pl.Expr, fmt: str, zone: str) -> pl.Expr:
    num = col.cast(pl.Float64, strict=False)
    # Clip before the integer cast: a huge float would overflow Int64 rather than become null.
    num = pl.when(num.abs() < 1e15).then(num).otherwise(None)
    if fmt == "unix_s":
        return _epoch_ms((num * 1000).round(0))
    if fmt == "unix_ms":
        return _epoch_ms(num.round(0))
    if fmt in ("iso", "auto"):
        iso = _utc(col.str.to_datetime(time_zone=zone, strict=False, time_unit="ms"))
        if fmt == "iso":
            return iso
        return pl.when(num.is_not_null()).then(_epoch_ms((num * 1000).round(0))).otherwise(iso)
    if "%" in fmt:
        if any(t in fmt for t in ("%H", "%M", "%S", "%T", "%s")):
            return _utc(col.str.to_datetime(fmt, strict=False, time_unit="ms", time_zone=zone))
        return _utc(col.str.to_date(fmt, strict=False).cast(pl.Datetime("ms"))
                    .dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null"))
    raise ConfigError(f"unknown timestamp_format {fmt!r}: use unix_s, unix_ms, iso, auto or a "
                      "strftime pattern", field="timestamp_format", value=fmt)


def _utc(ts: pl.Expr) -> pl.Expr:
    return ts.dt.convert_time_zone("UTC")


def _epoch_ms(ms: pl.Expr) -> pl.Expr:
    ms = pl.when(ms.abs() < 4_102_444_800_000 * 10).then(ms).otherwise(None)
    return pl.from_epoch(ms.cast(pl.Int64, strict=False), time_unit="ms").dt.replace_time_zone(
        "UTC")
