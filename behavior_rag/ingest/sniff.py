"""Look at a file's first lines: strip a UTF-8 BOM, guess the file type, the line ending and the
delimiter.

Lines end in ``\n`` or ``\r\n``; a file whose head holds ``\r`` but no ``\n`` is an old-Mac
file, whose lines end in a bare ``\r`` (:func:`eol_char`, :func:`raw_lines`).

The delimiter is the candidate (``,`` tab ``;`` ``|``) that splits the header into more than one
field and splits the most sample lines into the same number of fields as the header (quotes are
respected). Ties go to the earlier candidate, so a one-column file reads as comma-separated.

Example:
    >>> sniff_delimiter(["SessionId\\tItemId\\tTime", "1\\t214\\t2014-04-07"])
    '\\t'
    >>> sniff_delimiter(["user_id;timestamp", "NA;1700000000"])
    ';'
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from behavior_rag.errors import ConfigError

DELIMITERS = (",", "\t", ";", "|")
BOM = "\ufeff"
HEAD_LINES = 50
_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


def eol_char(path: Path) -> str:
    """``\r`` for an old-Mac file (a bare CR ends each line), else ``\n``."""
    try:
        with path.open("rb") as f:
            chunk = f.read(1 << 16)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", file=str(path)) from e
    return "\r" if b"\r" in chunk and b"\n" not in chunk else "\n"


def raw_lines(f: BinaryIO, eol: str = "\n") -> Iterator[bytes]:
    """The physical lines of a binary file object, split at ``eol`` (see :func:`eol_char`)."""
    if eol == "\n":
        yield from f
        return
    sep = eol.encode()
    buf = b""
    while chunk := f.read(1 << 20):
        *lines, buf = (buf + chunk).split(sep)
        yield from lines
    if buf:
        yield buf


def head_lines(path: Path, n: int = HEAD_LINES) -> list[str]:
    """The first ``n`` non-empty lines of ``path`` as text (lossy UTF-8, BOM removed)."""
    out: list[str] = []
    eol = eol_char(path)
    try:
        with path.open("rb") as f:
            for raw in raw_lines(f, eol):
                line = raw[:65536].decode("utf-8", "replace").rstrip("\r\n")
                if not out:
                    line = line.lstrip(BOM)
                if line.strip():
                    out.append(line)
                if len(out) >= n:
                    break
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", file=str(path)) from e
    return out


def file_type(path: Path, head: list[str]) -> str:
    """``parquet``, ``jsonl`` or ``csv``, from the suffix, else from the first character."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if head and head[0].lstrip().startswith("{"):
        return "jsonl"
    return "csv"


def sniff_delimiter(head: list[str]) -> str:
    """The delimiter that splits ``head`` (header first) most consistently; ``,`` if none."""
    best, best_score = ",", 0.0
    for d in DELIMITERS:
        widths = [_width(line, d) for line in head[:HEAD_LINES]]
        if not widths or widths[0] < 2:
            continue
        score = sum(w == widths[0] for w in widths) / len(widths)
        if score > best_score:
            best, best_score = d, score
    return best


def parse_delimiter(value: str) -> str:
    """A ``--delimiter`` value: one character, or a name (``tab``, ``\\t``, ``semicolon``…)."""
    d = _NAMES.get(value.lower(), value) if value else value
    if len(d) != 1 or d in ('"', "\n", "\r"):
        raise ConfigError("--delimiter takes one character (or tab, comma, semicolon, pipe, "
                          "space)", field="delimiter", value=value)
    return d


def _width(line: str, delimiter: str) -> int:
    try:
        return len(next(csv.reader([line], delimiter=delimiter)))
    except (csv.Error, StopIteration):
        return 0
