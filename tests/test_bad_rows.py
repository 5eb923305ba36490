"""Planted bad rows: strict fails naming row and field and writes nothing; lenient skips them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from behavior_rag.errors import ConfigError, IngestError
from behavior_rag.ingest.load import load_events

HEADER = b"user_id,timestamp,event_type,item_id,price,query\n"
GOOD = b"u1,1700000000,view,10,9.99,\n"
PLANTED = {
    # data row number -> (line, field, reason)
    2: (b"u1,1700000060,view,11,abc,\n", "price", "wrong_type"),
    3: (b"u1,,view,12,1.00,\n", "timestamp", "missing"),
    4: (b"u2,1700000100,cart,13,-5,\n", "price", "negative_price"),
    5: (b"u2,1700000200,teleport,14,1.00,\n", "event_type", "unknown_event_type"),
    6: (b"u2,1700000300,search,,,caf\xe9 bad bytes\n", "query", "invalid_utf8"),
    7: (b"u3,yesterday,view,15,1.00,\n", "timestamp", "bad_timestamp"),
}


@pytest.fixture()
def bad_csv(tmp_path):
    p = tmp_path / "events.csv"
    body = HEADER + GOOD + b"".join(PLANTED[i][0] for i in sorted(PLANTED)) + GOOD.replace(
        b"10,", b"16,")
    p.write_bytes(body)
    return p


def test_strict_names_first_bad_row_and_field_and_lists_all(bad_csv, settings):
    with pytest.raises(IngestError) as info:
        load_events(bad_csv, "generic", settings=settings, mode="strict")
    e = info.value
    assert (e.row, e.field, e.value) == (2, "price", "abc")
    assert "row 2" in str(e) and "'price'" in str(e) and str(bad_csv) in str(e)
    found = {(x["row"], x["field"], x["reason"]) for x in e.errors}
    assert found == {(row, field, reason) for row, (_, field, reason) in PLANTED.items()}
    assert e.context["error_count"] == len(PLANTED)


def test_lenient_skips_bad_rows_and_counts_reasons(bad_csv, settings):
    res = load_events(bad_csv, "generic", settings=settings, mode="lenient")
    r = res.report
    assert (r.rows_read, r.rows_ok, r.rows_skipped) == (8, 2, 6)
    assert r.skipped_by_reason == {"wrong_type": 1, "missing": 1, "negative_price": 1,
                                   "unknown_event_type": 1, "invalid_utf8": 1,
                                   "bad_timestamp": 1}
    assert sorted(e.item_id for s in res.sessions for e in s.events) == ["10", "16"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_strict_writes_nothing_and_lenient_writes_store(bad_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIOR_RAG_HOME", str(tmp_path / "home"))
    out = tmp_path / "store"
    p = _cli("ingest", str(bad_csv), "--format", "generic", "--out", str(out))
    assert p.returncode == 2
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert (err["error"], err["row"], err["field"]) == ("IngestError", 2, "price")
    assert not out.exists() and not list(tmp_path.glob(".store*"))

    p = _cli("ingest", str(bad_csv), "--format", "generic", "--out", str(out), "--mode", "lenient")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["rows_skipped"] == 6 and (out / "manifest.json").exists()


def test_strict_failure_keeps_previous_store_intact(bad_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIOR_RAG_HOME", str(tmp_path / "home"))
    good = tmp_path / "good.csv"
    good.write_bytes(HEADER + GOOD)
    out = tmp_path / "store"
    assert _cli("ingest", str(good), "--format", "generic", "--out", str(out)).returncode == 0
    before = (out / "manifest.json").read_text()
    assert _cli("ingest", str(bad_csv), "--format", "generic", "--out", str(out)).returncode == 2
    assert (out / "manifest.json").read_text() == before


def test_missing_required_column_is_a_clear_error(tmp_path, settings):
    p = tmp_path / "x.csv"
    p.write_text("user,when,what\na,1,view\n")
    with pytest.raises(ConfigError) as info:
        load_events(p, "generic", settings=settings)
    assert "user_id" in str(info.value) and "not in the file" in str(info.value)
    assert "timestamp" in str(info.value) and "event_type" in str(info.value)


def test_uci_bad_row_names_field(tmp_path):
    from tests.conftest import UCI, need

    lines = need(UCI).read_text().splitlines()
    cols = lines[3].split(",")
    cols[5] = "lots"  # ProductRelated_Duration
    lines[3] = ",".join(cols)
    p = tmp_path / "uci.csv"
    p.write_text("\n".join(lines[:10]) + "\n")
    from behavior_rag.ingest.uci import load_uci

    with pytest.raises(IngestError) as info:
        load_uci(p)
    assert (info.value.row, info.value.field) == (3, "ProductRelated_Duration")
    assert load_uci(p, mode="lenient").report.sessions == 8
