"""Read a CSV line by line when polars cannot (a stray quote, a line with extra fields), so each
bad line is named by its number and the others are still read.

Only the fallback: polars reads well-formed files. Here each physical line is one record (a quoted
field spanning lines is a bad line), parsed with :mod:`csv` in strict mode.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
    >>> _ = p.write_text('a,b\\n1,2\\n3,4,5\\n6,"7\\n8,9\\n')
    >>> got = scan_csv(p, ",")
    >>> got.frame["a"].to_list(), [(e.line, e.row) for e in got.bad_lines]
    (['1', '8'], [(3, 2), (4, 3)])
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from behavior_rag.ingest.models import ROW, RawRead, RowError
from behavior_rag.ingest.sniff import BOM


def scan_csv(path: Path, sep: str, has_header: bool = True, columns: list[str] | None = None,
             limit: int | None = None) -> RawRead:
    """Good lines as a text frame (``__row`` = data row), bad lines as ``malformed_line``."""
    header: list[str] | None = None if has_header else columns
    rows: list[list[str]] = []
    numbers: list[int] = []
    bad: list[RowError] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            text = text.lstrip(BOM) if lineno == 1 else text
            if not text.strip():
                continue
            row_no = lineno - 1 if has_header else lineno
            try:
                cells = next(csv.reader([text], delimiter=sep, strict=True))
            except csv.Error as e:
                bad.append(_bad(row_no, lineno, text, f"malformed CSV line ({e})"))
                continue
            if header is None:
                header = [c.strip() for c in cells]
            elif len(cells) != len(header):
                bad.append(_bad(row_no, lineno, text, f"{len(cells)} fields where the header "
                                f"has {len(header)}"))
            else:
                rows.append(cells)
                numbers.append(row_no)
                if limit is not None and len(rows) >= limit:
                    break
    names = header or []
    frame = pl.DataFrame({c: [r[i] for r in rows] for i, c in enumerate(names)},
                         schema={c: pl.Utf8 for c in names})
    return RawRead(frame=frame.with_columns(pl.Series(ROW, numbers, dtype=pl.Int64)),
                   bad_lines=bad)


def _bad(row: int, line: int, text: str, message: str) -> RowError:
    return RowError(row=row, line=line, field="<line>", value=text[:200],
                    reason="malformed_line", message=f"line {line}: {message}")
