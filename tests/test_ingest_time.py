"""Timestamp resolution is detected per source; day-resolution data gets no invented times."""

from __future__ import annotations

import csv
from datetime import datetime, timezone

from behavior_rag.facts import compute_facts
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.models import ColumnMapping
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
