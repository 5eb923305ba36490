"""Exports as users have them: other delimiters, a BOM, null tokens, bad CLI arguments.

Every file here is a copy of real rows (REES46, Taobao) written the way other tools write them.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from behavior_rag.errors import IngestError
from behavior_rag.ingest.formats import detect_format
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.models import ReadOptions
from behavior_rag.ingest.store import read_store, write_store
from tests.conftest import REES46, TAOBAO, need


def _rows(path, n: int) -> list[list[str]]:
    with open(need(path), newline="") as f:
        return list(csv.reader(f))[: n + 1]


def _write(path, rows, delimiter=",", bom=False) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)


def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(tmp_path / "home"),
                        "BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY": "k"}
    return subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_tab_semicolon_pipe_and_bom_copies_give_identical_stores(tmp_path, settings):
    rows = _rows(REES46, 400)
    frames = []
    for name, d, bom in (("c.csv", ",", False), ("t.tsv", "\t", False), ("s.csv", ";", False),
                         ("p.txt", "|", False), ("bom.csv", ",", True), ("bomt.tsv", "\t", True)):
        _write(tmp_path / name, rows, d, bom)
        assert detect_format(tmp_path / name).name == "rees46", name
        res = load_events(tmp_path / name, settings=settings)
        write_store(res.sessions, tmp_path / f"store-{name}")
        frames.append([x.model_dump() for x in read_store(tmp_path / f"store-{name}")])
    assert sum(len(x["events"]) for x in frames[0]) == 400
    for f in frames[1:]:
        assert f == frames[0]


def test_delimiter_option_overrides_the_sniffer(tmp_path, settings):
    rows = _rows(TAOBAO, 50)
    _write(tmp_path / "x.csv", rows, ";")
    sniffed = load_events(tmp_path / "x.csv", "taobao", settings=settings)
    forced = load_events(tmp_path / "x.csv", "taobao", settings=settings,
                         options=ReadOptions(delimiter=";"))
    assert sniffed.report.events == forced.report.events == 50
    with pytest.raises(Exception) as info:  # the wrong delimiter: one column, named clearly
        load_events(tmp_path / "x.csv", "taobao", settings=settings,
                    options=ReadOptions(delimiter=","))
    assert "user_id" in str(info.value) and "not in the file" in str(info.value)


def test_na_user_ids_are_missing_not_one_user_called_na(tmp_path, settings):
    rows = _rows(TAOBAO, 300)
    anon = {r[0] for r in rows[1:80]}
    planted = [rows[0]] + [["NA", *r[1:]] if r[0] in anon else r for r in rows[1:]]
    _write(tmp_path / "anon.csv", planted, ";")
    with pytest.raises(IngestError) as info:
        load_events(tmp_path / "anon.csv", settings=settings)
    first_na = next(i for i, r in enumerate(planted[1:], start=1) if r[0] == "NA")
    assert (info.value.row, info.value.field, info.value.context["reason"]) == (
        first_na, "user_id", "missing")
    res = load_events(tmp_path / "anon.csv", settings=settings, mode="lenient")
    n_na = sum(r[0] == "NA" for r in planted[1:])
    assert res.report.skipped_by_reason == {"missing": n_na}
    assert res.report.users == len({r[0] for r in rows[1:]} - anon)
    # Only the tokens given: "NA" is then a real value again (one user called NA)
    keep = load_events(tmp_path / "anon.csv", settings=settings,
                       options=ReadOptions(null_values=["-"]))
    assert keep.report.users == len({r[0] for r in rows[1:]} - anon) + 1


def test_null_tokens_per_column(tmp_path, settings):
    rows = _rows(REES46, 100)
    price = rows[0].index("price")
    planted = [rows[0]] + [r[:price] + ["-1"] + r[price + 1:] if i % 10 == 0 else r
                           for i, r in enumerate(rows[1:], start=1)]
    _write(tmp_path / "p.csv", planted)
    with pytest.raises(IngestError) as info:
        load_events(tmp_path / "p.csv", settings=settings)
    assert (info.value.row, info.value.field) == (10, "price")
    res = load_events(tmp_path / "p.csv", settings=settings,
                      options=ReadOptions(column_nulls={"price": ["-1"]}))
    prices = [e.price for s in res.sessions for e in s.events]
    assert res.report.events == 100 and prices.count(None) >= 10


@pytest.mark.parametrize("args,field", [
    (["--gap-minutes", "0"], "gap_minutes"), (["--gap-minutes", "-5"], "gap_minutes"),
    (["--gap-minutes", "nan"], "gap_minutes"), (["--gap-minutes", "inf"], "gap_minutes"),
    (["--gap-minutes", "soon"], "gap_minutes"), (["--delimiter", "ab"], "delimiter"),
    (["--mode", "loose"], "mode"), (["--null", "=x"], "null"), (["--format", "nope"], "format"),
    (["--map", "bogus=x"], "bogus"), (["--map", "event_type_constant=clicks"],
                                       "event_type_constant"),
    (["--timezone", "Mars/Olympus"], "timezone"),
])
def test_bad_cli_arguments_are_json_errors(tmp_path, monkeypatch, capsys, args, field):
    # In-process (the same main() the console script runs): a subprocess per case is slow.
    from behavior_rag.cli.app import main

    monkeypatch.setattr(sys, "argv", ["behavior-rag", "ingest", str(need(REES46)), "--out",
                                      str(tmp_path / "st"), *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["field"] == field
    assert not (tmp_path / "st").exists()


def test_out_must_be_a_folder_or_absent(tmp_path):
    (tmp_path / "afile").write_text("mine")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        p = _cli(tmp_path, "ingest", str(need(REES46)), "--out", str(out))
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert json.loads(p.stderr.strip().splitlines()[-1])["field"] == "out"
    assert (tmp_path / "afile").read_text() == "mine"
    p = _cli(tmp_path, "ingest", str(need(REES46)), "--out", str(tmp_path / "st"),
             "--gap-minutes", "12.5", "--delimiter", "comma")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["events"] == 1000


def test_field_names_that_look_like_regexes_are_plain_names(tmp_path, settings):
    """A column or record field called "^...$" is a regex to polars' pl.col: found by the
    ingest fuzz test as a crash ("the name 'event_type' ... is duplicate"). It is just a name."""
    from behavior_rag.ingest.load import load_records

    recs = [{"user_id": "u1", "timestamp": "2024-01-01T10:00:00", "event_type": "view",
             "item_id": f"i{i}", "^event_type$": " x ", "^.*$": "NA"} for i in range(3)]
    res = load_records(recs, settings=settings)
    assert res.report.events == 3
    rows = [["user_id", "timestamp", "event_type", "item_id", "^.*$"],
            *[["u1", f"2024-01-01T10:0{i}:00", "view", f"i{i}", "NA"] for i in range(3)]]
    _write(tmp_path / "r.csv", rows)
    assert load_events(tmp_path / "r.csv", settings=settings).report.events == 3
