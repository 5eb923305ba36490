"""Read a source file into an all-string polars frame with a 1-based ``__row`` column.

Everything is read as text on purpose: type checks happen afterwards, column by column, so a bad
value becomes a row error naming its field instead of a failed (or silently nulled) parse.
Invalid UTF-8 is read lossily and flagged per row later (U+FFFD marks the spot).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from behavior_rag.errors import IngestError
from behavior_rag.ingest.lines import check_header, check_width, header_cells, scan_csv, short_rows
from behavior_rag.ingest.models import MAX_COLUMNS, ROW, FormatSpec, RawRead, RowError
from behavior_rag.ingest.nested import (
    as_text,
    auto_events_path,
    auto_list_column,
    cell,
    explode_frame,
    explode_records,
)
from behavior_rag.ingest.sniff import BOM, eol_char, head_lines, raw_lines, sniff_delimiter

__all__ = ["ROW", "null_tokens", "raise_bad_lines", "read_raw", "read_source", "records_frame"]


def read_raw(path: Path, spec: FormatSpec, limit: int | None = None) -> pl.DataFrame:
    """Read ``path`` as ``spec`` says; every column Utf8, plus ``__row``. ``limit``: only the
    first rows (lines, for nested JSONL), for a look at the file. A line that cannot be read
    at all raises :class:`IngestError` naming it (see :func:`read_source` to skip such lines)."""
    got = read_source(path, spec, limit)
    if got.bad_lines:
        raise_bad_lines(str(path), got.bad_lines)
    return got.frame


def read_source(path: Path, spec: FormatSpec, limit: int | None = None) -> RawRead:
    """Like :func:`read_raw`, returning the lines that could not be read instead of raising."""
    if not path.is_file():
        raise IngestError("file not found" if not path.is_dir() else
                          "is a folder, not a file", file=str(path))
    bad: list[RowError] = []
    try:
        if spec.file_type == "csv":
            got = _read_csv(path, spec, limit)
            df, bad = got.frame, got.bad_lines
        elif spec.file_type == "whitespace":
            df = _read_whitespace(path, spec)
        elif spec.file_type == "jsonl":
            got = _read_jsonl(path, spec, limit)
            df, bad = got.frame, got.bad_lines
        else:
            df = _read_parquet(path, spec, limit)
    except IngestError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise IngestError(f"cannot parse {spec.file_type} file: {e}", file=str(path)) from e
    if ROW not in df.columns:
        df = df.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    return RawRead(frame=null_tokens(df, spec.null_values, spec.column_nulls), bad_lines=bad)


def raise_bad_lines(file: str, bad: list[RowError]) -> None:
    """Raise the first unreadable line, listing them all (strict mode)."""
    first = bad[0]
    raise IngestError(f"{first.message} ({len(bad)} unreadable line(s); nothing was written — "
                      "fix them or use --mode lenient to skip them)", file=file, row=first.row,
                      line=first.line, value=first.value, reason=first.reason,
                      field=None if first.field == "<line>" else first.field,
                      errors=[e.model_dump() for e in bad[:50]], error_count=len(bad))


def _read_csv(path: Path, spec: FormatSpec, limit: int | None) -> RawRead:
    head = head_lines(path)
    sep = spec.separator or sniff_delimiter(head)
    eol = eol_char(path)
    if head and spec.has_header:  # before any row is parsed: fail fast on a bad header
        check_header(header_cells(head[0], sep), str(path))
    try:
        frame = pl.read_csv(
            path, infer_schema=False, separator=sep, has_header=spec.has_header,
            new_columns=spec.columns, n_rows=limit, encoding="utf8-lossy", raise_if_empty=False,
            eol_char=eol)
    except pl.exceptions.PolarsError:
        # A malformed line (stray quote, extra field): read line by line to name it.
        return scan_csv(path, sep, spec.has_header, spec.columns, limit, eol)
    frame = frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    return short_rows(path, frame, sep, eol, spec.has_header)


def null_tokens(df: pl.DataFrame, tokens: list[str], per_column: dict[str, list[str]]
                ) -> pl.DataFrame:
    """Strip cells; blank cells and the null tokens (all columns, plus per column) become null."""
    def one(i: int, c: str) -> pl.Expr:
        nulls = ["", *tokens, *per_column.get(c, [])]
        v = pl.nth(i).str.strip_chars()  # by position: pl.col("^...$") would be a regex
        return pl.when(v.is_in(nulls)).then(None).otherwise(v).alias(c)

    return df.with_columns(one(i, c) for i, c in enumerate(df.columns) if c != ROW)


def records_frame(records: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """In-memory records (dicts) -> the same all-string frame as :func:`read_raw`."""
    rows: list[dict[str, str | None]] = []
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, Mapping):
            raise IngestError("each record must be a mapping of field -> value", row=i,
                              value=type(rec).__name__)
        row: dict[str, str | None] = {}
        for k, v in rec.items():
            if not isinstance(k, str) or not k:
                raise IngestError("field names must be non-empty strings", row=i, field=str(k))
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise IngestError("values must be scalars (str, number, bool or null)", row=i,
                                  field=k, value=repr(v)[:60])
            row[k] = None if v is None else (_text(v).strip() or None)
        rows.append(row)
    cols = sorted({k for r in rows for k in r})
    # Built as Series, not pl.col(name) expressions: a field named "^...$" is a regex there.
    df = pl.DataFrame([pl.Series(c, [r.get(c) for r in rows], dtype=pl.Utf8) for c in cols])
    return df.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))


def _text(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # Lone surrogates cannot be encoded anywhere downstream; mark them like bad bytes.
        return v.encode("utf-8", "replace").decode("utf-8")
    return repr(v) if isinstance(v, float) else str(v)


def _read_whitespace(path: Path, spec: FormatSpec) -> pl.DataFrame:
    # One column per line, then split on runs of whitespace: the format is column-aligned text.
    lines = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None,
                        new_columns=["line"], infer_schema=False, encoding="utf8-lossy",
                        eol_char=eol_char(path))
    lines = lines.with_columns(pl.col("line").str.strip_chars())
    first = lines["line"][0] if lines.height else ""
    if first and not first.split()[0].isdigit():  # a header line, as in CDNOW_master.txt
        lines = lines.slice(1)
        # Keep row numbers relative to data rows; the header is not a data row.
    parts = lines.with_columns(pl.col("line").str.replace_all(r"\s+", " ").str.split(" ")
                               .alias("parts"))
    n_fields = parts["parts"].list.len()
    counts = n_fields.unique().to_list()
    widths = [n for n in counts if n in spec.alt_columns]
    if not widths:
        raise IngestError(f"expected {sorted(spec.alt_columns)} whitespace-separated fields per "
                          f"line, found {sorted(counts)[:5]}", file=str(path), row=1)
    names = spec.alt_columns[max(widths, key=lambda n: (n_fields == n).sum())]
    width = len(names)
    df = parts.select(
        pl.when(pl.col("parts").list.len() == width)
        .then(pl.col("parts").list.get(i, null_on_oob=True)).otherwise(None).alias(name)
        for i, name in enumerate(names)
    )
    # Lines with the wrong field count keep nulls: validation reports them as missing fields.
    return df.with_columns(
        (pl.col("dollar_value").cast(pl.Float64, strict=False)
         / pl.col("number_of_cds").cast(pl.Float64, strict=False)).cast(pl.Utf8).alias("unit_price")
        if {"dollar_value", "number_of_cds"} <= set(names) else pl.lit(None, pl.Utf8).alias("_")
    )


def _read_jsonl(path: Path, spec: FormatSpec, limit: int | None = None) -> RawRead:
    records, bad = _jsonl_records(path, limit)
    nested = spec.events_path or (auto_events_path(records[0][1]) if records else None)
    if nested is None:
        frame = records_frame(
            {k: v if not isinstance(v, (dict, list)) else cell(v) for k, v in rec.items()}
            for _, rec in records)
        # a flat JSONL row is its line
        return RawRead(frame=frame.with_columns(pl.Series(ROW, [i for i, _ in records],
                                                          dtype=pl.Int64)), bad_lines=bad)
    if spec.events_path and records and not any(spec.events_path in r for _, r in records):
        raise IngestError(f"no field {spec.events_path!r} to take events from (fields: "
                          f"{sorted(records[0][1])})", file=str(path), field="events_path",
                          value=spec.events_path)
    good = []
    for line, rec in records:
        evs = rec.get(nested)
        if evs is not None and not (isinstance(evs, list)
                                    and all(isinstance(e, dict) for e in evs)):
            bad.append(_bad_line(line, f"{nested!r} must be a list of event objects",
                                 cell(evs) or "", field=nested))
        else:
            good.append(rec)
    return RawRead(frame=explode_records(good, nested), bad_lines=sorted(bad, key=lambda e: e.line
                                                                         or 0))


def _bad_line(line: int, message: str, text: str, field: str = "<line>") -> RowError:
    return RowError(row=line, line=line, field=field, value=text[:200], reason="malformed_line",
                    message=f"line {line}: {message}")


def _jsonl_records(path: Path, limit: int | None = None
                   ) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    # Parse line by line with json so a bad line is reported with its number, not as a frame error.
    records, bad = [], []
    with path.open("rb") as f:
        for i, raw in enumerate(raw_lines(f, eol_char(path)), start=1):
            line = raw.decode("utf-8", "replace").strip().lstrip(BOM)
            if not line:
                continue
            try:
                rec = json.loads(line, object_pairs_hook=_unique_keys)
            except _DuplicateKey as e:  # not "the last one wins": which value is meant?
                bad.append(RowError(row=i, line=i, field=e.key, value=line[:200],
                                    reason="duplicate_key", message=f"line {i}: key {e.key!r} "
                                    "appears twice in one JSON object"))
                continue
            except json.JSONDecodeError as e:
                bad.append(_bad_line(i, f"invalid JSON: {e.msg}", line))
                continue
            except RecursionError:
                bad.append(_bad_line(i, "JSON nested too deeply", line))
                continue
            if not isinstance(rec, dict):
                bad.append(_bad_line(i, "each JSONL line must be an object", line))
                continue
            if len(rec) > MAX_COLUMNS:
                check_width(len(rec), str(path))
            records.append((i, rec))
            if limit is not None and len(records) >= limit:
                break
    return records, bad


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _read_parquet(path: Path, spec: FormatSpec, limit: int | None = None) -> pl.DataFrame:
    check_width(len(pl.read_parquet_schema(path)), str(path))
    df = pl.read_parquet(path, n_rows=limit)
    nested = spec.events_path or auto_list_column(df)
    if nested is not None:
        if nested not in df.columns:
            raise IngestError(f"no column {nested!r} to take events from (columns: "
                              f"{df.columns})", file=str(path), field=nested)
        df = explode_frame(df, nested)
    return as_text(df)
