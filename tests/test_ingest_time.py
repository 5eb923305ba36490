"""Timestamp resolution is detected per source; day-resolution data gets no invented times."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from behavior_rag.facts import compute_facts
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.models import ColumnMapping, ReadOptions
from behavior_rag.ingest.store import read_store, write_store
from behavior_rag.render import render
from tests.conftest import CDNOW_SAMPLE, DATA, REES46, need

OTTO = DATA / "otto_sample" / "train.jsonl"


def test_resolution_is_detected_per_source(taobao, settings):
    assert taobao.report.time_resolution == "second"
    assert load_events(need(REES46), settings=settings).report.time_resolution == "second"
    otto = load_events(need(OTTO), settings=settings)
    assert otto.report.time_resolution == "millisecond"
    assert {s.time_resolution for s in otto.sessions} == {"millisecond"}


def test_day_resolution_facts_are_none_with_a_reason(tmp_path, settings):
    res = load_events(need(CDNOW_SAMPLE), "cdnow", settings=settings)
    assert res.report.time_resolution == "day"
    s = next(s for s in res.sessions if s.n_events > 1)
    f = compute_facts(s)
    assert (f.start_hour.value, f.part_of_day.value, f.dwell_median_s.value) == (None,) * 3
    assert f.dwell_s.value == [] and "day resolution" in f.unknown["part_of_day"]
    assert f.weekday.value == s.events[0].timestamp.strftime("%A")
    text = render(s, settings=settings)
    assert "time of day unknown" in text and "(night)" not in text
    write_store(res.sessions[:50], tmp_path / "st")
    assert [x.time_resolution for x in read_store(tmp_path / "st")] == ["day"] * 50


def test_a_date_only_column_is_day_resolution(tmp_path, settings):
    # Taobao rows with their unix seconds cut to a date, as a daily export would have them
    with open(need(DATA / "taobao_userbehavior" / "UserBehavior.dev.csv"), newline="") as f:
        rows = list(csv.reader(f))[:200]
    with open(tmp_path / "daily.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "category_id", "behavior_type", "day"])
        w.writerows(r[:4] + [datetime.fromtimestamp(int(r[4]), timezone.utc).date().isoformat()]
                    for r in rows[1:])
    res = load_events(tmp_path / "daily.csv", "taobao", settings=settings,
                      mapping=ColumnMapping(timestamp="day", timestamp_format="%Y-%m-%d"))
    assert res.report.time_resolution == "day" and res.report.events == 199
    assert all(compute_facts(s).part_of_day.value is None for s in res.sessions)


def test_taobao_sessions_carry_their_shoppers_zone(taobao, tmp_path, settings):
    # Taobao's unix times are absolute; its shoppers live on UTC+8, where the facts are computed.
    s = next(s for s in taobao.sessions if s.events)
    assert s.timezone == "Asia/Shanghai"
    utc_hour = s.events[0].timestamp.astimezone(timezone.utc).hour
    assert compute_facts(s).start_hour.value == (utc_hour + 8) % 24
    assert "Asia/Shanghai" in render(s, settings=settings)
    write_store(taobao.sessions[:20], tmp_path / "st")
    assert {x.timezone for x in read_store(tmp_path / "st")} == {"Asia/Shanghai"}
    # the flag overrides the adapter, and the times themselves do not move
    utc = load_events(need(DATA / "taobao_userbehavior" / "UserBehavior.dev.csv"), "taobao",
                      settings=settings, options=ReadOptions(timezone="UTC"))
    same = next(x for x in utc.sessions if x.session_id == s.session_id)
    assert same.events[0].timestamp == s.events[0].timestamp
    assert compute_facts(same).start_hour.value == utc_hour


def _naive_csv(tmp_path, stamps: list[str]):
    path = tmp_path / "naive.csv"
    path.write_text("user_id,timestamp,event_type,item_id\n"
                    + "".join(f"u1,{t},view,{i}\n" for i, t in enumerate(stamps)))
    return path


def test_naive_times_are_local_times_of_the_source_zone(tmp_path, settings):
    path = _naive_csv(tmp_path, ["2024-01-01 10:00:00", "2024-01-01 10:05:00"])
    berlin = load_events(path, mapping=ColumnMapping(timezone="Europe/Berlin"),
                         settings=settings).sessions[0]
    assert berlin.events[0].timestamp == datetime(2024, 1, 1, 9, tzinfo=timezone.utc)
    assert compute_facts(berlin).start_hour.value == 10
    # times logged in UTC for shoppers in Berlin (REES46's case): same clock reading, +1 h facts
    logged_utc = load_events(path, mapping=ColumnMapping(timezone="Europe/Berlin",
                                                         timestamp_zone="UTC"),
                             settings=settings).sessions[0]
    assert logged_utc.events[0].timestamp == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
    assert compute_facts(logged_utc).start_hour.value == 11


def test_dates_in_a_zone_east_of_utc_stay_on_their_day(tmp_path, settings):
    # 2024-01-01 is a Monday in Shanghai; its midnight is Sunday 16:00 UTC
    path = _naive_csv(tmp_path, ["2024-01-01", "2024-01-01"])
    res = load_events(path, mapping=ColumnMapping(timezone="Asia/Shanghai",
                                                  timestamp_format="%Y-%m-%d"),
                      settings=settings)
    assert res.report.time_resolution == "day"
    f = compute_facts(res.sessions[0])
    assert (f.weekday.value, f.part_of_day.value) == ("Monday", None)
    assert "Mon 2024-01-01 (time of day unknown)" in render(res.sessions[0], settings=settings)


def test_an_unknown_zone_is_a_clear_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValidationError, match="unknown time zone"):
        ColumnMapping(timezone="Mars/Olympus")
    from behavior_rag.cli.app import main

    (tmp_path / "m.yaml").write_text("timezone: Mars/Olympus\n")
    monkeypatch.setattr(sys, "argv", ["behavior-rag", "ingest", str(_naive_csv(tmp_path, [
        "2024-01-01"])), "--out", str(tmp_path / "st"), "--mapping", str(tmp_path / "m.yaml")])
    with pytest.raises(SystemExit) as info:
        main()
    err = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert info.value.code == 2 and err["field"] == "timezone", err
    assert "unknown time zone" in err["message"]
