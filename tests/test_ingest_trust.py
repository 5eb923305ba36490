"""Ingest never silently wrong, never a traceback (issues 30.6-30.10, 33.3-33.4): each case is
run through the ``behavior-rag`` command as a user would, and must either read the file right
or exit 2 with a JSON error naming the file, row, field or column."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from behavior_rag.cli.app import main
from behavior_rag.ingest.store import read_store

HEAD = "user_id,timestamp,event_type,item_id"
ROWS = ["1,1700000000,view,a", "1,1700000060,cart,b", "2,1700000000,view,c"]


def run(capsys, monkeypatch, tmp_path: Path, *args: str) -> tuple[int, dict | list, str]:
    """``behavior-rag ARGS`` in-process: (exit code, parsed JSON of stdout or stderr, stderr)."""
    monkeypatch.setenv("BEHAVIOR_RAG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "argv", ["behavior-rag", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    text = out if code == 0 else err
    lines = [json.loads(x) for x in text.splitlines() if x.strip().startswith("{")]
    return code, (lines[0] if len(lines) == 1 else lines), err


@pytest.fixture()
def cli(capsys, monkeypatch, tmp_path):
    return lambda *a: run(capsys, monkeypatch, tmp_path, *a)


def _write(tmp_path: Path, name: str, data: str | bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(p)


# ---- 30.8: silently wrong ingest -----------------------------------------------------------
@pytest.mark.parametrize("eol", ["\r", "\r\n", "\n"])
def test_old_mac_line_endings_read_like_any_other(cli, tmp_path, eol):
    f = _write(tmp_path, "log.csv", eol.join([HEAD, *ROWS]) + eol)
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 0, err
    assert (rep["rows_read"], rep["events"], rep["sessions"]) == (3, 3, 2)
    assert sorted(e.item_id for s in read_store(tmp_path / "st") for e in s.events) == \
        ["a", "b", "c"]


def test_old_mac_jsonl_is_read_line_by_line(cli, tmp_path):
    recs = [json.dumps({"user_id": "1", "timestamp": 1700000000 + i, "event_type": "view",
                        "item_id": str(i)}) for i in range(3)]
    f = _write(tmp_path, "log.jsonl", "\r".join(recs) + "\r")
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 0, err
    assert rep["events"] == 3


@pytest.mark.parametrize("header,row,column", [
    ("user_id,timestamp,event_type,item_id,user_id", "1,1700000000,view,a,9", "user_id"),
    ("user_id,timestamp,event_type,item_id,timestamp", "1,1700000000,view,a,1700009000",
     "timestamp"),
])
def test_a_column_named_twice_is_an_error_naming_it(cli, tmp_path, header, row, column):
    f = _write(tmp_path, "log.csv", f"{header}\n{row}\n")
    code, e, _ = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 2 and e["error"] == "IngestError"
    assert e["field"] == column and "twice" in e["message"] and e["file"] == f
    assert not (tmp_path / "st").exists()


def test_a_short_row_is_a_bad_row_naming_it(cli, tmp_path):
    f = _write(tmp_path, "log.csv", "\n".join([HEAD, ROWS[0], "1,1700000060,view", ROWS[2]])
               + "\n")
    code, e, _ = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 2 and e["row"] == 2 and e["reason"] == "malformed_line"
    assert "3 field(s) where the header has 4" in e["message"]
    assert not (tmp_path / "st").exists()
    # the bad-row policy: lenient skips it and counts it
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "st"), "--mode", "lenient")
    assert code == 0, err
    assert (rep["events"], rep["rows_skipped"], rep["skipped_by_reason"]) == \
        (2, 1, {"malformed_line": 1})


def test_a_quoted_separator_or_blank_cell_is_not_a_short_row(cli, tmp_path):
    f = _write(tmp_path, "log.csv", "user_id,timestamp,event_type,item_id,brand\n"
               '1,1700000000,view,a,"acme, inc"\n1,1700000060,view,b,\n')
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 0, err
    assert rep["events"] == 2


def test_duplicate_json_keys_are_an_error_naming_row_and_key(cli, tmp_path):
    f = _write(tmp_path, "log.jsonl",
               '{"user_id": "1", "timestamp": 1700000000, "event_type": "view", "item_id": "a"}\n'
               '{"user_id": "1", "timestamp": 1700000060, "event_type": "view", "item_id": "b",'
               ' "item_id": "c"}\n')
    code, e, _ = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 2 and (e["row"], e["field"], e["reason"]) == (2, "item_id", "duplicate_key")
    assert "twice" in e["message"]


# ---- 30.7: tracebacks ----------------------------------------------------------------------
def test_jsonl_of_bare_numbers_is_a_clear_error(cli, tmp_path):
    f = _write(tmp_path, "nums.jsonl", "42\n43\n")
    code, e, err = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 2 and "Traceback" not in err
    assert e["row"] == 1 and "must be an object" in e["message"]


@pytest.mark.parametrize("gap", ["1e308", "-5", "nan", "inf", "0", "1e7", "soon"])
def test_absurd_gap_minutes_are_refused_with_bounds(cli, tmp_path, gap):
    f = _write(tmp_path, "log.csv", "\n".join([HEAD, *ROWS]) + "\n")
    code, e, err = cli("ingest", f, "--out", str(tmp_path / "st"), f"--gap-minutes={gap}")
    assert code == 2 and "Traceback" not in err
    assert e["field"] == "gap_minutes" and "<= 527040" in e["message"]


def test_largest_allowed_gap_works(cli, tmp_path):
    f = _write(tmp_path, "log.csv", "\n".join([HEAD, *ROWS]) + "\n")
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "st"), "--gap-minutes", "527040")
    assert code == 0, err
    assert rep["sessions"] == 2


# ---- 30.6: ingest only writes where it may -------------------------------------------------
def test_ingest_refuses_a_model_folder_an_index_folder_and_a_foreign_folder(cli, tmp_path):
    f = _write(tmp_path, "log.csv", "\n".join([HEAD, *ROWS]) + "\n")
    ix = tmp_path / "ix"
    model = ix / "model-0123abcd"
    model.mkdir(parents=True)
    (model / "manifest.json").write_text(json.dumps({"classes": ["a", "b"], "heads": []}))
    (ix / "config.json").write_text(json.dumps({"format_version": 3, "stores": {},
                                                "embedder": {}}))
    other = tmp_path / "docs"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for target, word in ((model, "index folder"), (ix, "index folder"),
                         (ix / "sessions-new", "index folder"), (other, "not a session store")):
        code, e, _ = cli("ingest", f, "--out", str(target))
        assert code == 2 and e["error"] == "StoreError" and e["field"] == "out", target
        assert word in e["message"], (target, e["message"])
    assert json.loads((model / "manifest.json").read_text())["classes"] == ["a", "b"]
    assert (other / "notes.txt").read_text() == "mine"
    # a model folder outside any index is refused by its manifest, not its parent
    lone = tmp_path / "model-77"
    lone.mkdir()
    (lone / "manifest.json").write_text(json.dumps({"classes": ["a"]}))
    code, e, _ = cli("ingest", f, "--out", str(lone))
    assert code == 2 and "not a store manifest" in e["message"]


def test_ingest_replaces_its_own_store_and_fills_an_empty_folder(cli, tmp_path):
    f = _write(tmp_path, "log.csv", "\n".join([HEAD, *ROWS]) + "\n")
    (tmp_path / "empty").mkdir()
    for target in ("st", "st", "empty"):
        code, rep, err = cli("ingest", f, "--out", str(tmp_path / target))
        assert code == 0, err


# ---- 30.9: raw ids nowhere in --inspect ----------------------------------------------------
def test_inspect_masks_user_id_samples(cli, tmp_path):
    f = _write(tmp_path, "log.csv", "\n".join(
        [HEAD, "alice42,1700000000,view,a", "bob77,1700000060,view,b"]) + "\n")
    code, ins, err = cli("ingest", f, "--inspect")
    assert code == 0, err
    text = json.dumps(ins)
    assert "alice42" not in text and "bob77" not in text
    user = next(c for c in ins["columns"] if c["name"] == "user_id")
    assert user["samples"] == ["a***", "b***"] and user["masked"]
    item = next(c for c in ins["columns"] if c["name"] == "item_id")
    assert item["samples"] == ["a", "b"] and not item["masked"]
    code, _, err = cli("ingest", f, "--inspect", "--human")
    assert "alice42" not in err and "a***" in err


# ---- 30.10: wide files fail fast -----------------------------------------------------------
def test_a_ten_thousand_column_file_fails_fast(cli, tmp_path):
    names = HEAD.split(",") + [f"c{i}" for i in range(9996)]
    rows = [",".join([*r.split(","), *["x"] * 9996]) for r in ROWS * 30]
    f = _write(tmp_path, "wide.csv", "\n".join([",".join(names), *rows]) + "\n")
    t0 = time.perf_counter()
    code, e, _ = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert time.perf_counter() - t0 < 5
    assert code == 2 and e["columns"] == 10000 and "at most 1000" in e["message"]


def test_too_many_attribute_columns_is_one_clear_error(cli, tmp_path):
    names = HEAD.split(",") + [f"c{i}" for i in range(80)]
    rows = [",".join([*r.split(","), *["x"] * 80]) for r in ROWS]
    f = _write(tmp_path, "mid.csv", "\n".join([",".join(names), *rows]) + "\n")
    code, e, _ = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 2 and e["field"] == "attrs" and "80 columns" in e["message"]


# ---- 33.3 / 33.4: logs without event types or with anonymous users -------------------------
TSV = "SessionId\tItemId\tTime\n1\t214\t2014-04-07T10:00:00\n1\t215\t2014-04-07T10:01:00\n" \
      "2\t7\t2014-04-07T11:00:00\n"


def test_no_event_type_column_error_offers_the_constant_and_inspect(cli, tmp_path):
    f = _write(tmp_path, "clicks.tsv", TSV)
    code, e, _ = cli("ingest", f, "--out", str(tmp_path / "st"), "--map", "session_id=SessionId",
                     "--map", "item_id=ItemId", "--map", "timestamp=Time")
    assert code == 2 and e["field"] == "event_type"
    assert "--map event_type_constant=view" in e["message"] and "--inspect" in e["message"]


def test_unknown_columns_lists_columns_not_generic_field_names(cli, tmp_path):
    f = _write(tmp_path, "clicks.tsv", TSV)
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "st"), "--map",
                         "session_id=SessionId", "--map", "item_id=ItemId", "--map",
                         "timestamp=Time", "--map", "event_type_constant=view")
    assert code == 0, err
    assert rep["unknown_columns"] == [] and rep["events"] == 3


def test_report_counts_known_users_and_anonymous_sessions(cli, tmp_path):
    f = _write(tmp_path, "na.csv", "user_id;session_id;timestamp;event_type;item_id\n"
               "NA;s1;1700000000;view;a\nNA;s1;1700000060;view;b\nNA;s2;1700000000;view;c\n"
               "7;;1700000000;view;c\n7;;1700090000;view;d\n8;;1700000000;view;c\n")
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "st"))
    assert code == 0, err
    assert (rep["sessions"], rep["users"], rep["users_known"]) == (5, 4, False)
    assert (rep["known_users"], rep["known_user_sessions"], rep["anonymous_sessions"]) == \
        (2, 3, 2)
