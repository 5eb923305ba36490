"""Lines that cannot be read at all (stray quote, extra field, bad JSON): strict names the line,
lenient skips exactly those lines and reports them with their numbers. Real rows around them."""

from __future__ import annotations

import csv
import json

import pytest

from behavior_rag.errors import IngestError
from behavior_rag.ingest.load import load_events
from tests.conftest import DATA, REES46, need

OTTO = DATA / "otto_sample" / "train.jsonl"


def _rees46_with_bad_lines(tmp_path):
    with open(need(REES46), newline="") as f:
        rows = list(csv.reader(f))[:101]
    lines = [",".join(f'"{c}"' if "," in c else c for c in r) for r in rows]
    planted = {11: lines[11] + ",extra", 31: lines[31].replace(",", ',"', 1),
               61: lines[61] + ",,,"}
    for i, text in planted.items():
        lines[i] = text
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "bad.csv", {i + 1 for i in planted}, rows  # file line = index + 1


def test_strict_names_the_first_bad_csv_line(tmp_path, settings):
    path, bad, _ = _rees46_with_bad_lines(tmp_path)
    with pytest.raises(IngestError) as info:
        load_events(path, settings=settings)
    e = info.value
    assert e.context["line"] == min(bad) and e.row == min(bad) - 1
    assert "line 12" in str(e) and str(path) in str(e)
    assert {x["line"] for x in e.errors} == bad


def test_lenient_skips_only_the_bad_csv_lines(tmp_path, settings):
    path, bad, rows = _rees46_with_bad_lines(tmp_path)
    res = load_events(path, settings=settings, mode="lenient")
    r = res.report
    assert r.skipped_by_reason == {"malformed_line": 3}
    assert (r.rows_read, r.events) == (100, 97)
    assert {x.line for x in r.examples} == bad
    kept = sorted(e.item_id for s in res.sessions for e in s.events)
    assert kept == sorted(row[2] for i, row in enumerate(rows[1:], start=2) if i not in bad)


def test_lenient_skips_bad_jsonl_lines_with_their_numbers(tmp_path, settings):
    lines = need(OTTO).read_text().splitlines()
    lines[3] = lines[3][:-5]  # cut off: invalid JSON
    lines[7] = "[1, 2]"
    lines[12] = '{"session": 99, "events": ' + "[" * 50_000 + "]" * 50_000 + "}"
    (tmp_path / "o.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(IngestError) as info:
        load_events(tmp_path / "o.jsonl", settings=settings)
    assert info.value.context["line"] == 4
    res = load_events(tmp_path / "o.jsonl", settings=settings, mode="lenient")
    assert res.report.skipped_by_reason == {"malformed_line": 3}
    assert [x.line for x in res.report.examples] == [4, 8, 13]
    kept = {str(json.loads(x)["session"]) for i, x in enumerate(lines) if i not in (3, 7, 12)}
    assert {s.session_id for s in res.sessions} == kept


def test_cli_lenient_reports_bad_lines(tmp_path):
    import os
    import subprocess
    import sys

    path, bad, _ = _rees46_with_bad_lines(tmp_path)
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(tmp_path / "h")}
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", "ingest", str(path), "--out",
                        str(tmp_path / "st"), "--mode", "lenient"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert {x["line"] for x in report["examples"]} == bad
