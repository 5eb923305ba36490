"""Each built-in adapter on its real file: counts match the data README and an independent count."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import datetime, timezone

from behavior_rag.ingest.formats import detect_format
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.uci import load_uci
from tests.conftest import CDNOW_MASTER, CDNOW_SAMPLE, REES46, TAOBAO, UCI, need


def _gap_sessions(rows: list[tuple[str, int]], gap_s: int) -> int:
    """Independent sessionisation with the csv module: a gap > gap_s starts a session."""
    by_user: dict[str, list[int]] = defaultdict(list)
    for user, ts in rows:
        by_user[user].append(ts)
    n = 0
    for times in by_user.values():
        times.sort()
        n += 1 + sum(1 for a, b in zip(times, times[1:]) if b - a > gap_s)
    return n


def test_taobao_counts_match_readme_and_independent_sessionisation(taobao):
    with open(need(TAOBAO), newline="") as f:
        rows = [(r["user_id"], int(r["timestamp"])) for r in csv.DictReader(f)]
    r = taobao.report
    assert (r.rows_read, r.events, r.users) == (61_322, 61_322, 589)  # data README
    assert r.sessions == _gap_sessions(rows, 30 * 60) == len(taobao.sessions)
    assert r.seconds < 10  # "in seconds" on the full dev file
    types = {e.type for s in taobao.sessions for e in s.events}
    assert types == {"view", "cart", "fav", "purchase"}


def test_taobao_user_ids_are_pseudonymised(taobao):
    with open(need(TAOBAO), newline="") as f:
        raw_users = {r["user_id"] for r in csv.DictReader(f)}
    ours = {s.user_id for s in taobao.sessions}
    assert not ours & raw_users
    assert all(u.startswith("u_") and len(u) == 18 for u in ours)


def test_taobao_sessions_are_ordered_and_within_gap(taobao):
    for s in taobao.sessions[:2000]:
        ts = [e.timestamp for e in s.events]
        assert ts == sorted(ts)
        assert all((b - a).total_seconds() <= 1800 for a, b in zip(ts, ts[1:]))
        assert all(e.user_id == s.user_id and e.session_id == s.session_id for e in s.events)


def test_rees46_uses_source_session_ids(session_settings):
    with open(need(REES46), newline="") as f:
        rows = list(csv.DictReader(f))
    res = load_events(REES46, settings=session_settings)  # format detected from the header
    assert res.report.format == "rees46"
    assert res.report.events == 1_000
    assert res.report.sessions == len({r["user_session"] for r in rows})
    assert res.report.users == len({r["user_id"] for r in rows})
    first = next(s for s in res.sessions if s.session_id == rows[0]["user_session"])
    e = first.events[0]
    assert e.timestamp == datetime(2019, 10, 1, tzinfo=timezone.utc)
    assert (e.item_id, e.brand, e.price) == ("44600062", "shiseido", 35.79)
    # category_code is empty on that row: the adapter falls back to category_id
    assert e.category == "2103807459595387724"
    assert {ev.type for s in res.sessions for ev in s.events} <= {"view", "cart", "purchase",
                                                                   "remove_from_cart"}


def test_uci_one_session_per_row_with_revenue_label():
    res = load_uci(need(UCI))
    assert res.report.sessions == 9_914 == len(res.sessions)
    labels = [s.label for s in res.sessions]
    assert labels.count("purchase") == 1_546
    s = res.sessions[1]  # second data row: 0,0,0,0,2,64,0,0.1,0,0,Feb,2,2,1,2,Returning_Visitor,...
    assert s.events == []
    assert s.aggregates["ProductRelated"] == 2
    assert s.aggregates["ProductRelated_Duration"] == 64.0
    assert s.aggregates["Month"] == "Feb" and s.aggregates["Weekend"] is False
    assert "Revenue" not in s.aggregates  # the label is not a feature


def test_cdnow_master_and_sample(session_settings):
    master = load_events(need(CDNOW_MASTER), settings=session_settings)
    assert master.report.format == "cdnow"
    assert (master.report.events, master.report.users) == (69_659, 23_570)
    sample = load_events(need(CDNOW_SAMPLE), "cdnow", settings=session_settings)
    assert (sample.report.events, sample.report.users) == (6_919, 2_357)
    # CDNOW has day resolution: a session is one customer's purchases of one day
    with open(CDNOW_SAMPLE) as f:
        days = {(p[0], p[2]) for p in (line.split() for line in f)}
    assert sample.report.sessions == len(days)
    e = sample.sessions[0].events[0]
    assert e.type == "purchase" and e.attrs["number_of_cds"] >= 1
    assert abs(e.price * e.attrs["number_of_cds"] - e.attrs["dollar_value"]) < 1e-6


def test_format_detection():
    assert detect_format(need(TAOBAO)).name == "taobao"
    assert detect_format(need(UCI)).name == "uci"
    assert detect_format(need(CDNOW_SAMPLE)).name == "cdnow"


def _write_custom_log(tmp_path):
    import polars as pl

    rows = {"uid": ["x", "x", "y"], "when": ["2024-02-01T10:00:00Z", "2024-02-01T10:05:00Z",
                                             "2024-02-01T11:00:00Z"],
            "action": ["click", "order", "click"], "sku": ["A1", "A1", "B2"],
            "amount": ["3.50", "3.50", None], "channel": ["app", "app", "web"]}
    pl.DataFrame(rows).write_parquet(tmp_path / "log.parquet")
    pl.DataFrame(rows).write_ndjson(tmp_path / "log.jsonl")
    pl.DataFrame(rows).write_csv(tmp_path / "log.tsv", separator="\t")


def test_parquet_jsonl_and_csv_with_a_column_mapping(tmp_path, settings):
    from behavior_rag.ingest.formats import GENERIC
    from behavior_rag.ingest.models import ColumnMapping

    _write_custom_log(tmp_path)
    mapping = ColumnMapping(user_id="uid", timestamp="when", event_type="action", item_id="sku",
                            price="amount", timestamp_format="iso",
                            type_map={"click": "view", "order": "purchase"})
    tsv = GENERIC.model_copy(update={"separator": "\t", "mapping": mapping})
    outs = [load_events(tmp_path / "log.parquet", mapping=mapping, settings=settings),
            load_events(tmp_path / "log.jsonl", mapping=mapping, settings=settings),
            load_events(tmp_path / "log.tsv", tsv, settings=settings)]
    dumps = [[s.model_dump(exclude={"source"}) for s in r.sessions] for r in outs]
    assert dumps[0] == dumps[1] == dumps[2]
    sessions = outs[0].sessions
    assert [[e.type for e in s.events] for s in sessions] == [["view", "purchase"], ["view"]]
    assert sessions[0].events[1].price == 3.5
    assert sessions[0].events[0].attrs == {"channel": "app"}  # unmapped columns kept as attrs


def test_cli_ingest_with_map_options(tmp_path):
    import json
    import subprocess
    import sys

    _write_custom_log(tmp_path)
    p = subprocess.run(
        [sys.executable, "-m", "behavior_rag.cli", "ingest", str(tmp_path / "log.parquet"),
         "--out", str(tmp_path / "st"), "--map", "user_id=uid", "--map", "timestamp=when",
         "--map", "event_type=action", "--map", "item_id=sku"],
        capture_output=True, text=True, timeout=120,
        env={"BEHAVIOR_RAG_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"})
    # 'click'/'order' are not event types and no type_map was given: strict refuses, naming them
    assert p.returncode == 2
    err = json.loads(p.stderr)
    assert (err["field"], err["value"], err["row"]) == ("event_type", "click", 1)
