"""Random delimiters, null tokens, column orders, quoting and BOMs over a real file: the events
always come back the same; random junk lines never crash anything but a BehaviorRagError."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from behavior_rag.errors import BehaviorRagError
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.models import ReadOptions
from behavior_rag.settings import Settings
from tests.conftest import REES46, need

SETTINGS = Settings(home="/tmp/behavior_rag_fuzz_home", ingest={"pseudonym_key": "fuzz"})
TOKENS = ["", "NA", "null", "-", "N/A", "?"]


def _rows() -> list[list[str]]:
    with open(need(REES46), newline="") as f:
        return list(csv.reader(f))[:61]


def _text(rows, delimiter, order, token, quoting) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator="\n")
    for i, r in enumerate(rows):
        w.writerow([(c if c or i == 0 else token) for c in (r[j] for j in order)])
    return buf.getvalue()


def _events(res) -> list[tuple]:
    return sorted((s.session_id, s.user_id, e.timestamp, e.type, e.item_id, e.category, e.brand,
                   e.price) for s in res.sessions for e in s.events)


def _load(text: str, bom: bool, **kw):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "log.txt"
        p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
        return load_events(p, settings=SETTINGS, **kw)


ROWS = _rows() if REES46.is_file() else []
BASE = _events(_load(_text(ROWS, ",", range(9), "", csv.QUOTE_MINIMAL), False)) if ROWS else []


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([",", "\t", ";", "|"]), st.permutations(range(9)),
       st.sampled_from(TOKENS), st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
       st.booleans())
def test_any_delimiter_order_and_null_token_round_trips(delimiter, order, token, quoting, bom):
    text = _text(_rows(), delimiter, order, token, quoting)
    opts = ReadOptions(null_values=[token]) if token not in ("", "NA", "null") else None
    res = _load(text, bom, options=opts)
    assert res.report.format == "rees46" and res.report.events == 60
    assert _events(res) == BASE


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([",", ";", "\t"]),
       st.lists(st.tuples(st.integers(1, 60), st.text(max_size=40)), max_size=4),
       st.sampled_from(["strict", "lenient"]))
def test_junk_lines_never_crash(delimiter, junk, mode):
    lines = _text(_rows(), delimiter, range(9), "", csv.QUOTE_MINIMAL).splitlines()
    for pos, text in sorted(junk, reverse=True):
        lines.insert(pos, text.replace("\n", " ").replace("\r", " "))
    try:
        res = _load("\n".join(lines) + "\n", False, mode=mode)
    except BehaviorRagError:
        return
    assert res.report.events <= 60 + len(junk)
