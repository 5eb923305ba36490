"""Nested sessions (OTTO), logs without users, and partial mappings, on real files."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone

import polars as pl
import pytest

from behavior_rag.errors import ConfigError, IngestError
from behavior_rag.ingest.formats import detect_format
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.models import ColumnMapping, ReadOptions
from behavior_rag.ingest.pseudonym import is_anonymous
from tests.conftest import DATA, REES46, need

OTTO = DATA / "otto_sample" / "train.jsonl"
TYPES = {"clicks": "view", "carts": "cart", "orders": "purchase"}


def _otto_raw() -> list[dict]:
    return [json.loads(line) for line in need(OTTO).read_text().splitlines() if line.strip()]


def _events(res) -> dict[str, list[tuple]]:
    return {s.session_id: [(e.item_id, e.timestamp, e.type) for e in s.events]
            for s in res.sessions}


def _expected() -> dict[str, list[tuple]]:
    return {str(r["session"]): sorted(
        [(str(e["aid"]), datetime.fromtimestamp(e["ts"] / 1000, timezone.utc), TYPES[e["type"]])
         for e in r["events"]], key=lambda t: t[1]) for r in _otto_raw()}


def test_otto_adapter_reads_the_real_sample(settings):
    assert detect_format(need(OTTO)).name == "otto"
    res = load_events(OTTO, settings=settings)
    r = res.report
    assert (r.format, r.sessions, r.events) == ("otto", 20, 862)  # data README
    types = [e.type for s in res.sessions for e in s.events]
    assert (types.count("view"), types.count("cart"), types.count("purchase")) == (800, 52, 10)
    assert sum(any(e.type == "purchase" for e in s.events) for s in res.sessions) == 3
    assert _events(res) == _expected()
    # no user ids in OTTO: one anonymous user per session, and the report says so
    assert not r.users_known and r.anonymous_sessions == 20 and r.users == 20
    assert all(is_anonymous(s.user_id) for s in res.sessions)
    assert len({s.user_id for s in res.sessions}) == 20


def test_nested_parquet_and_events_path_give_the_same_sessions(tmp_path, settings):
    pl.read_ndjson(need(OTTO)).write_parquet(tmp_path / "otto.parquet")
    mapping = ColumnMapping(session_id="session", timestamp="ts", event_type="type",
                            item_id="aid", timestamp_format="unix_ms", type_map=TYPES)
    auto = load_events(tmp_path / "otto.parquet", mapping=mapping, settings=settings)
    named = load_events(OTTO, "generic", mapping=mapping, settings=settings,
                        options=ReadOptions(events_path="events"))
    assert _events(auto) == _events(named) == _expected()


def test_bad_nested_lines_name_their_line(tmp_path, settings):
    lines = need(OTTO).read_text().splitlines()[:3]
    deep = tmp_path / "deep.jsonl"
    deep.write_text("\n".join([lines[0], '{"session": 9, "events": ' + "[" * 100_000
                               + "]" * 100_000 + "}", lines[1]]) + "\n")
    with pytest.raises(IngestError) as info:
        load_events(deep, "otto", settings=settings)
    assert info.value.row == 2 and "deeply" in str(info.value)
    flat = tmp_path / "flat.jsonl"
    flat.write_text("\n".join([lines[0], '{"session": 9, "events": 3}', lines[1]]) + "\n")
    with pytest.raises(IngestError) as info:
        load_events(flat, "otto", settings=settings)
    assert (info.value.row, info.value.field) == (2, "events")


def test_session_only_tab_separated_click_log(tmp_path, settings):
    # SessionId<TAB>ItemId<TAB>Time, as YOOCHOOSE/diginetica-style exports ship it
    with open(tmp_path / "clicks.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["SessionId", "ItemId", "Time"])
        for r in _otto_raw():
            for e in r["events"]:
                w.writerow([r["session"], e["aid"], datetime.fromtimestamp(
                    e["ts"] / 1000, timezone.utc).isoformat()])
    mapping = ColumnMapping(session_id="SessionId", item_id="ItemId", timestamp="Time",
                            event_type_constant="view")
    res = load_events(tmp_path / "clicks.tsv", mapping=mapping, settings=settings)  # no --format
    assert res.report.sessions == 20 and res.report.events == 862
    assert not res.report.users_known and all(is_anonymous(s.user_id) for s in res.sessions)
    assert {k: [x[:2] for x in v] for k, v in _events(res).items()} == {
        k: [x[:2] for x in v] for k, v in _expected().items()}


def _rees46_renamed(tmp_path, delimiter=",", users=None):
    with open(need(REES46), newline="") as f:
        rows = list(csv.reader(f))
    rows[0] = ["uid" if c == "user_id" else c for c in rows[0]]
    if users is not None:
        rows[1:] = [r[:7] + [users(r[7])] + r[8:] for r in rows[1:]]
    with open(tmp_path / "r.csv", "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return tmp_path / "r.csv"


def test_partial_map_merges_into_the_detected_mapping(tmp_path, settings):
    path = _rees46_renamed(tmp_path)
    ours = load_events(path, "rees46", mapping=ColumnMapping(user_id="uid"), settings=settings)
    theirs = load_events(REES46, settings=settings)
    assert [s.model_dump() for s in ours.sessions] == [s.model_dump() for s in theirs.sessions]
    e = ours.sessions[0].events[0]
    assert e.item_id and e.price is not None and "price" not in e.attrs


def test_mapped_column_typo_and_unused_columns_are_reported(tmp_path, settings):
    path = _rees46_renamed(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_events(path, "rees46", mapping=ColumnMapping(user_id="userid"), settings=settings)
    assert (info.value.context["field"], info.value.context["value"]) == ("user_id", "userid")
    res = load_events(path, "rees46", settings=settings, mapping=ColumnMapping(
        user_id="uid", category="category_code", attrs=[]))
    assert res.report.unused_columns == ["category_id"]


def test_na_users_with_session_ids_get_one_anonymous_user_per_session(tmp_path, settings):
    with open(need(REES46), newline="") as f:
        rows = list(csv.DictReader(f))
    anon = {r["user_id"] for r in rows[:200]}
    path = _rees46_renamed(tmp_path, ";", users=lambda u: "NA" if u in anon else u)
    res = load_events(path, mapping=ColumnMapping(user_id="uid"), settings=settings)
    anon_sessions = {r["user_session"] for r in rows if r["user_id"] in anon}
    assert res.report.events == 1000 and not res.report.users_known
    assert res.report.anonymous_sessions == len(anon_sessions)
    by_session = {s.session_id: s.user_id for s in res.sessions}
    assert all(is_anonymous(by_session[s]) for s in anon_sessions)
    assert res.report.users == len({r["user_id"] for r in rows} - anon) + len(anon_sessions)


def test_profile_of_a_session_only_user_says_users_are_unknown(settings):
    from behavior_rag.profile import build_profile

    res = load_events(OTTO, settings=settings)
    s = next(s for s in res.sessions if any(e.type == "purchase" for e in s.events))
    p = build_profile(s.user_id, res.sessions)
    assert "users are unknown for this source" in p.cannot_infer[0]
    assert "users are unknown for this source" in p.narrative
    assert p.session_ids == [s.session_id]


def test_otto_sessions_as_users_split_at_gaps_as_the_readme_says(settings):
    res = load_events(OTTO, mapping=ColumnMapping(user_id="session", session_id=None),
                      settings=settings)
    gaps = sum(1 + sum(1 for a, b in zip(ts, ts[1:]) if b - a > 30 * 60 * 1000)
               for ts in (sorted(e["ts"] for e in r["events"]) for r in _otto_raw()))
    assert (res.report.format, res.report.users, res.report.users_known) == ("otto", 20, True)
    assert res.report.sessions == gaps == 144  # README "Bring your own log"


def test_cli_map_with_an_empty_column_unmaps_the_field(tmp_path, monkeypatch, capsys):
    from behavior_rag.cli.app import main

    monkeypatch.setenv("BEHAVIOR_RAG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "argv", ["behavior-rag", "ingest", str(need(OTTO)), "--map",
                                      "user_id=session", "--map", "session_id=", "--out",
                                      str(tmp_path / "st")])
    main()
    report = json.loads(capsys.readouterr().out)
    assert (report["sessions"], report["users"], report["users_known"]) == (144, 20, True)
