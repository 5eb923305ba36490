"""Read a CSV line by line when polars cannot (a stray quote, a line with extra fields), so each
bad line is named by its number and the others are still read.

Only the fallback: polars reads well-formed files. Here each physical line is one record (a quoted
field spanning lines is a bad line), parsed with :mod:`csv` in strict mode. Also the checks every
CSV read makes: a header naming a column twice, or wider than :data:`MAX_COLUMNS`, is refused
before any row is parsed; a row with fewer fields than the header is a bad line (:func:`short_rows`).

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

from behavior_rag.errors import IngestError
from behavior_rag.ingest.models import MAX_COLUMNS, ROW, RawRead, RowError
from behavior_rag.ingest.sniff import BOM, raw_lines


def header_cells(line: str, sep: str) -> list[str]:
    """The column names of a header line (quotes respected, blanks stripped)."""
    try:
        return [c.strip() for c in next(csv.reader([line], delimiter=sep))]
    except (csv.Error, StopIteration):
        return [c.strip() for c in line.split(sep)]


def check_header(names: list[str], file: str) -> None:
    """Refuse a header wider than :data:`MAX_COLUMNS` or naming a column twice: which of two
    ``user_id`` (or ``timestamp``) columns is meant cannot be guessed."""
    check_width(len(names), file)
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name and name in seen:
            raise IngestError(f"column {name!r} appears twice in the header (columns "
                              f"{seen[name]} and {i}): rename or remove one, nothing was "
                              "written", file=file, field=name, columns=[seen[name], i])
        seen.setdefault(name, i)


def check_width(n: int, file: str) -> None:
    """Refuse a file of more than :data:`MAX_COLUMNS` columns before reading its rows."""
    if n > MAX_COLUMNS:
        raise IngestError(f"the file has {n} columns; at most {MAX_COLUMNS} (an event log has a "
                          "few dozen): select the columns you need first", file=file,
                          columns=n)


def short_rows(path: Path, frame: pl.DataFrame, sep: str, eol: str, has_header: bool
               ) -> RawRead:
    """``frame`` (a polars read of ``path`` with ``__row``) without the rows that have fewer
    fields than the header, which become ``malformed_line`` errors: polars pads such a row
    with blanks, so its fields are counted on the raw lines."""
    width = len([c for c in frame.columns if c != ROW])
    counts = _field_counts(path, sep, eol, has_header, frame.height)
    bad = [RowError(row=i, field="<line>", value=None, reason="malformed_line",
                    message=f"row {i}: {n} field(s) where the header has {width}")
           for i, n in enumerate(counts, start=1) if 0 < n < width]
    if not bad:
        return RawRead(frame=frame)
    rows = [e.row for e in bad]
    return RawRead(frame=frame.filter(~pl.col(ROW).is_in(rows)), bad_lines=bad)


def _field_counts(path: Path, sep: str, eol: str, has_header: bool, n: int) -> list[int]:
    """Fields of the first ``n`` records (0 for a blank line), numbered as polars does."""
    try:
        lines = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None,
                            new_columns=["l"], infer_schema=False, encoding="utf8-lossy",
                            eol_char=eol, raise_if_empty=False,
                            n_rows=n + int(has_header))["l"]
    except pl.exceptions.PolarsError:
        lines = None
    if lines is not None and not (lines.str.count_matches('"', literal=True) % 2 == 1).any():
        # no quoted field spans lines: one line, one record; quoted spans hold no separators
        counts = pl.DataFrame({"l": lines}).select(
            pl.when(pl.col("l").str.strip_chars().str.len_chars().fill_null(0) == 0).then(0)
            .otherwise(pl.col("l").str.replace_all(r'"[^"]*"', "")
                       .str.count_matches(sep, literal=True) + 1))
        out = counts.to_series().to_list()
        return out[int(has_header):][:n]
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        out = [len(r) if any(c.strip() for c in r) else 0
               for _, r in zip(range(n + int(has_header)), csv.reader(f, delimiter=sep))]
    return out[int(has_header):]


def scan_csv(path: Path, sep: str, has_header: bool = True, columns: list[str] | None = None,
             limit: int | None = None, eol: str = "\n") -> RawRead:
    """Good lines as a text frame (``__row`` = data row), bad lines as ``malformed_line``."""
    header: list[str] | None = None if has_header else columns
    rows: list[list[str]] = []
    numbers: list[int] = []
    bad: list[RowError] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(raw_lines(f, eol), start=1):
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
