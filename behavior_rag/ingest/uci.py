"""UCI Online Shoppers Purchasing Intention: one aggregate row per session, no event list.

Each row becomes a :class:`Session` with typed ``aggregates`` (page counts, durations, rates,
PageValues, month, visitor type, …) and ``label`` ``"purchase"`` / ``"no_purchase"`` from
``Revenue``. The source has no user ids, so each session gets its own anonymous user ``uci_r<row>``.
:data:`AGGREGATES` declares each column's kind (ids such as ``Browser`` are categorical), in the
file's order; heads read the aggregates by it (registered as source ``"uci"`` in
:mod:`behavior_rag.ingest.aggregates`).

Example:
    >>> res = load_uci("../shared/data/uci_online_shoppers/online_shoppers_intention.dev.csv")
    ... # doctest: +SKIP
    >>> res.sessions[0].aggregates["ProductRelated"]  # doctest: +SKIP
    1
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from behavior_rag.errors import IngestError
from behavior_rag.ingest.models import FormatSpec, IngestReport, IngestResult
from behavior_rag.ingest.readers import ROW, read_raw
from behavior_rag.ingest.report import raise_strict, reasons_per_row, row_errors
from behavior_rag.ingest.validate import REPLACEMENT_CHAR
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import DeclaredAggregate, Session

INT_COLS = ("Administrative", "Informational", "ProductRelated", "OperatingSystems", "Browser",
            "Region", "TrafficType")
FLOAT_COLS = ("Administrative_Duration", "Informational_Duration", "ProductRelated_Duration",
              "BounceRates", "ExitRates", "PageValues", "SpecialDay")
TEXT_COLS = ("Month", "VisitorType")
BOOL_COLS = ("Weekend",)
LABEL_COL = "Revenue"
LABELS = {True: "purchase", False: "no_purchase"}
# Whole numbers that are ids, not quantities.
CATEGORICAL_INTS = ("OperatingSystems", "Browser", "Region", "TrafficType")
# The session-level aggregates this source declares, in the file's order.
AGGREGATES: tuple[DeclaredAggregate, ...] = (
    *(DeclaredAggregate(name=c, kind="categorical" if c in CATEGORICAL_INTS else "numeric")
      for c in INT_COLS),
    *(DeclaredAggregate(name=c, kind="numeric") for c in FLOAT_COLS),
    *(DeclaredAggregate(name=c, kind="categorical") for c in TEXT_COLS),
    *(DeclaredAggregate(name=c, kind="bool") for c in BOOL_COLS),
)


def load_uci(path: str | Path, *, settings: Settings | None = None,
             mode: str | None = None) -> IngestResult:
    """Load the UCI online shoppers CSV (original header) into aggregate-only sessions."""
    settings = settings or default_settings()
    mode = mode or settings.ingest.mode
    t0 = time.perf_counter()
    path = Path(path)
    raw = read_raw(path, FormatSpec(name="uci", kind="aggregate"))
    expected = (*INT_COLS, *FLOAT_COLS, *TEXT_COLS, *BOOL_COLS, LABEL_COL)
    absent = [c for c in expected if c not in raw.columns]
    if absent:
        raise IngestError(f"not a UCI online shoppers file: missing columns {absent}",
                          file=str(path), field=absent[0])
    bools = {"true": True, "false": False, "1": True, "0": False}
    typed = raw.with_columns(
        *(pl.col(c).cast(pl.Float64, strict=False).alias(f"_{c}") for c in INT_COLS + FLOAT_COLS),
        *(pl.col(c).str.to_lowercase().replace_strict(bools, default=None, return_dtype=pl.Boolean)
          .alias(f"_{c}") for c in (*BOOL_COLS, LABEL_COL)),
    )
    checks = []
    for c in expected:
        checks.append((c, pl.col(c).is_null(), "missing", f"{c} is empty"))
        checks.append((c, pl.col(c).str.contains(REPLACEMENT_CHAR, literal=True), "invalid_utf8",
                       "contains bytes that are not valid UTF-8"))
    for c in INT_COLS + FLOAT_COLS:
        v = pl.col(f"_{c}")
        checks.append((c, pl.col(c).is_not_null() & (v.is_null() | ~v.is_finite()), "wrong_type",
                       f"{c} is not a number"))
        checks.append((c, v.is_finite() & (v < 0), "negative", f"{c} must be >= 0"))
    for c in INT_COLS:
        v = pl.col(f"_{c}")
        checks.append((c, v.is_finite() & (v != v.round(0)), "wrong_type", f"{c} must be whole"))
    for c in (*BOOL_COLS, LABEL_COL):
        checks.append((c, pl.col(c).is_not_null() & pl.col(f"_{c}").is_null(), "wrong_type",
                       f"{c} must be TRUE or FALSE"))
    errors = pl.concat([
        typed.filter(cond).select(pl.col(ROW), pl.lit(c).alias("field"), pl.col(c).alias("value"),
                                  pl.lit(reason).alias("reason"), pl.lit(msg).alias("message"))
        for c, cond, reason, msg in checks]).sort(ROW, maintain_order=True)
    errs = row_errors(errors)
    max_reported = settings.ingest.max_reported_errors
    if errs and mode == "strict":
        raise_strict(str(path), errs, errors[ROW].n_unique(), max_reported)
    good = typed.filter(~pl.col(ROW).is_in(errors[ROW].implode()))
    sessions = []
    for r in good.iter_rows(named=True):
        aggregates = {c: int(r[f"_{c}"]) for c in INT_COLS}
        aggregates |= {c: float(r[f"_{c}"]) for c in FLOAT_COLS}
        aggregates |= {c: r[c] for c in TEXT_COLS} | {c: r[f"_{c}"] for c in BOOL_COLS}
        sessions.append(Session(session_id=f"uci_{r[ROW]}", user_id=f"uci_r{r[ROW]}",
                                aggregates=aggregates, label=LABELS[r[f"_{LABEL_COL}"]],
                                source="uci"))
    by_reason = reasons_per_row(errs)
    report = IngestReport(file=str(path), format="uci", mode=mode, rows_read=raw.height,
                          rows_ok=len(sessions), rows_skipped=raw.height - len(sessions),
                          skipped_by_reason=by_reason,
                          examples=errs[:max_reported],
                          sessions=len(sessions), users=len(sessions),
                          seconds=round(time.perf_counter() - t0, 3))
    return IngestResult(sessions=sessions, report=report)
