"""Shared bad-row handling for every reader: error frame -> RowErrors, strict raise, reason counts."""

from __future__ import annotations

import polars as pl

from behavior_rag.errors import IngestError
from behavior_rag.ingest.models import RowError
from behavior_rag.ingest.readers import ROW

# Beyond this many problems, listing more helps nobody; counts stay exact.
MAX_COLLECTED = 10_000


def row_errors(errors: pl.DataFrame) -> list[RowError]:
    """An error frame ``(__row, field, value, reason, message)`` as models, in row order."""
    return [RowError(row=r[ROW], field=r["field"], value=r["value"], reason=r["reason"],
                     message=r["message"]) for r in errors.head(MAX_COLLECTED).iter_rows(named=True)]


def raise_strict(file: str, errs: list[RowError], n_rows: int, max_reported: int) -> None:
    """Raise the first error, carrying all of them (capped) and the number of bad rows."""
    first = errs[0]
    raise IngestError(
        f"{first.message} ({n_rows} bad row(s); nothing was written — fix them or use "
        "--mode lenient to skip them)", file=file, row=first.row, field=first.field,
        value=first.value, reason=first.reason,
        errors=[e.model_dump() for e in errs[:max_reported]], error_count=n_rows)


def reasons_per_row(errs: list[RowError]) -> dict[str, int]:
    """Skipped rows per reason; a row with several problems counts once, under its first
    (an unreadable line counts once, as ``malformed_line``)."""
    first: dict[tuple[int | None, int], str] = {}
    for e in errs:
        first.setdefault((e.line, e.row), e.reason)
    out: dict[str, int] = {}
    for reason in first.values():
        out[reason] = out.get(reason, 0) + 1
    return out
