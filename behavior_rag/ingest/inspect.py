"""``behavior-rag ingest FILE --inspect``: what a file looks like and a mapping to start from.

Reads the first rows only and writes nothing: file type, delimiter, nested events column,
columns with sample values and null rates, the guessed timestamp format and resolution, and a
proposed :class:`ColumnMapping` as YAML (every field spelled out) that ``--mapping`` reads back.

Example:
    >>> from tests.conftest import DATA  # doctest: +SKIP
    >>> ins = inspect_file(DATA / "otto_sample" / "train.jsonl", fmt="generic")  # doctest: +SKIP
    >>> ins.proposed_mapping.item_id, ins.timestamp_format  # doctest: +SKIP
    ('aid', 'unix_ms')
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml
from pydantic import BaseModel, Field

from behavior_rag.ingest.formats import resolve_format
from behavior_rag.ingest.guess import (
    guess_fields,
    guess_resolution,
    guess_timestamp_format,
    guess_type_map,
)
from behavior_rag.ingest.models import CANONICAL_FIELDS, ColumnMapping, FormatSpec, ReadOptions
from behavior_rag.ingest.nested import auto_events_path, auto_list_column
from behavior_rag.ingest.readers import ROW, read_raw
from behavior_rag.ingest.sniff import head_lines, sniff_delimiter
from behavior_rag.types import EVENT_TYPES, TimeResolution

SAMPLE_ROWS = 1000


class ColumnInfo(BaseModel):
    """One column of the sample: a few distinct values and the share of missing cells."""

    name: str
    samples: list[str]
    null_rate: float
    distinct: int = Field(description="Distinct values in the sample.")
    masked: bool = Field(False, description="Samples of a user id column are masked (first "
                         "character, then ***): raw user ids are never shown.")


class Inspection(BaseModel):
    """What ``--inspect`` found; ``mapping_yaml`` is ``proposed_mapping`` ready to edit."""

    file: str
    file_type: str
    format: str = Field(description="The built-in adapter that matched, or 'generic'.")
    delimiter: str | None = None
    events_path: str | None = None
    rows_sampled: int
    columns: list[ColumnInfo]
    timestamp_format: str | None = None
    timestamp_resolution: TimeResolution | None = None
    proposed_mapping: ColumnMapping
    notes: list[str] = Field(default_factory=list)
    mapping_yaml: str = ""


def inspect_file(path: str | Path, fmt: str = "auto", options: ReadOptions | None = None,
                 sample_rows: int = SAMPLE_ROWS) -> Inspection:
    """Look at the first ``sample_rows`` rows of ``path`` and propose a mapping."""
    path = Path(path)
    spec = resolve_format(fmt, path, mapping_given=True)
    spec = options.apply(spec) if options else spec
    raw = read_raw(path, spec, limit=sample_rows)
    cols = [c for c in raw.columns if c != ROW]
    notes: list[str] = []
    if spec.name != "generic" and spec.mapping is not None:
        mapping = spec.mapping
        notes.append(f"matches the built-in {spec.name!r} adapter (--format {spec.name}); "
                     "the mapping below is its own")
    else:
        mapping = propose_mapping(raw, notes)
    ts_col = next((c for c in mapping.sources("timestamp") if c in cols), None)
    resolution = guess_resolution(_values(raw, ts_col), mapping.timestamp_format) \
        if ts_col and mapping.timestamp_format != "auto" else None
    if resolution == "day":
        notes.append("timestamps have day resolution: time of day and dwell times cannot be "
                     "known")
    ins = Inspection(file=str(path), file_type=spec.file_type, format=spec.name,
                     delimiter=_delimiter(path, spec), events_path=_events_path(path, spec),
                     rows_sampled=raw.height,
                     columns=[_column(raw, c, c in mapping.sources("user_id")) for c in cols],
                     timestamp_format=mapping.timestamp_format if ts_col else None,
                     timestamp_resolution=resolution, proposed_mapping=mapping, notes=notes)
    return ins.model_copy(update={"mapping_yaml": mapping_yaml(ins)})


def propose_mapping(raw: pl.DataFrame, notes: list[str]) -> ColumnMapping:
    """A mapping guessed from the column names and values (notes say what is left to check)."""
    cols = [c for c in raw.columns if c != ROW]
    fields = guess_fields(cols)
    data: dict = {f: fields.get(f) for f in CANONICAL_FIELDS}
    if "timestamp" in fields:
        data["timestamp_format"] = guess_timestamp_format(_values(raw, fields["timestamp"])) \
            or "auto"
        if data["timestamp_format"] == "auto":
            notes.append(f"could not tell the format of {fields['timestamp']!r}: set "
                         "timestamp_format (unix_s, unix_ms, iso or a strftime pattern)")
    else:
        notes.append("no timestamp column recognised: set timestamp")
    if "event_type" in fields:
        values = sorted(set(_values(raw, fields["event_type"])))
        data["type_map"] = guess_type_map(values)
        unknown = [v for v in values if v not in EVENT_TYPES and v not in data["type_map"]]
        if unknown:
            notes.append(f"event type values without a mapping: {unknown[:10]}; add them to "
                         f"type_map (targets: {', '.join(EVENT_TYPES)})")
    else:
        data["event_type_constant"] = "view"
        notes.append("no event type column: every row is read as a 'view' "
                     "(event_type_constant); change it if the log holds other events")
    if "user_id" not in fields:
        notes.append("no user id column: each session gets its own anonymous user (users "
                     "unknown)" if "session_id" in fields else
                     "no user or session id column: set user_id or session_id")
    data["attrs"] = "rest"
    return ColumnMapping.model_validate(data)


def mapping_yaml(ins: Inspection) -> str:
    """The proposed mapping as YAML for ``--mapping``, with what was found as comments."""
    body = ins.proposed_mapping.model_dump(exclude_none=False)
    if body.get("event_type_constant") is None:
        body.pop("event_type_constant", None)
    head = [f"# proposed by behavior-rag ingest --inspect for {ins.file}",
            f"# format: {ins.format}; file type: {ins.file_type}"
            + (f"; delimiter: {ins.delimiter!r} (sniffed; --delimiter to change)"
               if ins.delimiter else "")
            + (f"; events in {ins.events_path!r}" if ins.events_path else ""),
            *(f"# note: {n}" for n in ins.notes),
            "# edit, then: behavior-rag ingest FILE --mapping THIS_FILE --out STORE"]
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def _values(raw: pl.DataFrame, col: str | None) -> list[str]:
    if col is None or col not in raw.columns:
        return []
    return raw[col].drop_nulls().head(SAMPLE_ROWS).to_list()


def _column(raw: pl.DataFrame, c: str, user_ids: bool = False) -> ColumnInfo:
    s = raw[c]
    distinct = s.drop_nulls().unique(maintain_order=True)
    samples = [mask_id(str(v)) if user_ids else str(v)[:80] for v in distinct.head(5).to_list()]
    return ColumnInfo(name=c, samples=samples, masked=user_ids,
                      null_rate=round(s.null_count() / max(len(s), 1), 4),
                      distinct=distinct.len())


def mask_id(value: str) -> str:
    """A raw user id as ``--inspect`` shows it: its first character, then ``***``."""
    return value[:1] + "***"


def _delimiter(path: Path, spec: FormatSpec) -> str | None:
    if spec.file_type != "csv":
        return None
    return spec.separator or sniff_delimiter(head_lines(path))


def _events_path(path: Path, spec: FormatSpec) -> str | None:
    if spec.events_path or spec.file_type not in ("jsonl", "parquet"):
        return spec.events_path
    if spec.file_type == "parquet":
        return auto_list_column(pl.read_parquet(path, n_rows=1))
    head = head_lines(path, 1)
    try:
        first = json.loads(head[0]) if head else {}
    except (ValueError, RecursionError):
        return None
    return auto_events_path(first) if isinstance(first, dict) else None

