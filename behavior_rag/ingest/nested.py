"""Nested sessions: one record per session holding a list of events (OTTO), exploded with polars.

The list column is ``FormatSpec.events_path`` or, when unset, the one column whose values are
lists of objects. Each event becomes a row carrying its session's other columns; an event field
named like a session column is kept as ``<events_path>.<field>``. Sessions with no events give no
rows. Every value is text afterwards, like every other reader's output.

Example:
    >>> recs = [{"session": 1, "events": [{"aid": 5, "ts": 10}, {"aid": 6, "ts": 11}]}]
    >>> explode_records(recs, "events").rows()
    [('1', '5', '10'), ('1', '6', '11')]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

NESTED = (pl.List, pl.Struct, pl.Array)


def list_of_objects(v: Any) -> bool:
    """A non-empty list whose items are all objects (dicts)."""
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def auto_events_path(first: Mapping[str, Any]) -> str | None:
    """The only key of ``first`` holding a list of objects, else None."""
    keys = [k for k, v in first.items() if list_of_objects(v)]
    return keys[0] if len(keys) == 1 else None


def cell(v: Any) -> str | None:
    """One JSON value as text: scalars as written, objects and lists as compact JSON."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v.encode("utf-8", "replace").decode("utf-8")
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return repr(v) if isinstance(v, float) else str(v)


def explode_records(records: Sequence[Mapping[str, Any]], path: str) -> pl.DataFrame:
    """Records with a list of event objects at ``path`` -> one text row per event."""
    outer = list(dict.fromkeys(k for r in records for k in r if k != path))
    inner = list(dict.fromkeys(k for r in records for e in (r.get(path) or []) for k in e))
    names = {k: f"{path}.{k}" if k in outer else k for k in inner}
    data: dict[str, list[Any]] = {k: [cell(r.get(k)) for r in records] for k in outer}
    data[path] = [[{names[k]: cell(e.get(k)) for k in inner} for e in (r.get(path) or [])]
                  for r in records]
    schema = {k: pl.Utf8 for k in outer} | {
        path: pl.List(pl.Struct({names[k]: pl.Utf8 for k in inner}))}
    return explode_frame(pl.DataFrame(data, schema=schema), path)


def explode_frame(df: pl.DataFrame, path: str) -> pl.DataFrame:
    """A frame with a list-of-struct column ``path`` -> one row per element, struct unnested."""
    inner = df.schema[path]
    if not (isinstance(inner, pl.List) and isinstance(inner.inner, pl.Struct)):
        return df
    outer = [c for c in df.columns if c != path]
    rename = {f.name: f"{path}.{f.name}" for f in inner.inner.fields if f.name in outer}
    df = df.explode(path).filter(pl.col(path).is_not_null())
    df = df.with_columns(pl.col(path).struct.rename_fields(
        [rename.get(f.name, f.name) for f in inner.inner.fields]))
    return df.unnest(path)


def auto_list_column(df: pl.DataFrame) -> str | None:
    """The only list-of-struct column of a (Parquet) frame, else None."""
    cols = [c for c, t in df.schema.items()
            if isinstance(t, pl.List) and isinstance(t.inner, pl.Struct)]
    return cols[0] if len(cols) == 1 else None


def as_text(df: pl.DataFrame) -> pl.DataFrame:
    """Every column as text; nested values (lists, structs) as compact JSON."""
    def one(c: str, t: pl.DataType) -> pl.Expr:
        if isinstance(t, NESTED):
            return pl.col(c).map_elements(lambda v: cell(_plain(v)), return_dtype=pl.Utf8)
        return pl.col(c).cast(pl.Utf8)

    return df.select(one(c, t) for c, t in df.schema.items())


def _plain(v: Any) -> Any:
    return v.to_list() if isinstance(v, pl.Series) else v
