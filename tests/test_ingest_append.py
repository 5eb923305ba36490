"""Several source files in one store (issue 31.2): ``behavior-rag ingest FILE --out STORE
--append`` joins a second export (orders beside clicks) into the sessions already there — by
source session id, else by user within the session gap — run through the command as a user
would: the per-file counts, duplicates, refusals, and a SIGKILL mid-append."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from behavior_rag.facts import compute_facts
from behavior_rag.faults import ENV
from behavior_rag.ingest.append import COMMITTED, PREPARED
from behavior_rag.ingest.store import read_store, write_store
from behavior_rag.synth import generate
from tests.test_ingest_trust import _write, run

PURCHASE = ("--map", "event_type_constant=purchase")


@pytest.fixture()
def cli(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY", "append-test-key")
    return lambda *a: run(capsys, monkeypatch, tmp_path, *a)


def _by_id(store: Path) -> dict:
    return {s.session_id: s for s in read_store(store)}


def _t(minute: int) -> str:
    """2024-01-01 10:00 + ``minute`` minutes, ISO."""
    return f"2024-01-01T{10 + minute // 60:02d}:{minute % 60:02d}:00"


# ---- joined by source session id ---------------------------------------------------------
CLICKS_SID = "\n".join([
    "session_id,user_id,timestamp,event_type,item_id",
    f"s1,1,{_t(0)},view,a", f"s1,1,{_t(2)},view,b", f"s1,1,{_t(9)},cart,b",
    f"s2,2,{_t(60)},view,c", f"s2,2,{_t(61)},view,d",
]) + "\n"
ORDERS_SID = "\n".join([
    "session_id,user_id,timestamp,item_id,price",
    f"s1,1,{_t(5)},b,9.5",       # lands between the clicks: kept in time order
    f"s2,2,{_t(70)},d,3",
    f"s9,3,{_t(200)},z,1",      # a session the clicks never saw: a new session
]) + "\n"


def test_orders_with_session_ids_land_in_those_sessions(cli, tmp_path):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_SID), \
        _write(tmp_path, "orders.csv", ORDERS_SID)
    store = str(tmp_path / "shop")
    code, first, err = cli("ingest", clicks, "--out", store)
    assert code == 0, err
    assert first["append"] is None
    before = {sid: s.events for sid, s in _by_id(Path(store)).items()}
    assert all(compute_facts(s).n_purchase.value == 0 for s in read_store(store))

    code, rep, err = cli("ingest", orders, "--out", store, "--append", *PURCHASE)
    assert code == 0, err
    a = rep["append"]
    assert (a["events_joined"], a["events_joined_by_session_id"], a["events_joined_by_gap"]) \
        == (2, 2, 0)
    assert (a["sessions_touched"], a["sessions_new"], a["events_in_new_sessions"]) == (2, 1, 1)
    assert (a["duplicates_dropped"], a["store_sessions"], a["store_events"]) == (0, 3, 8)
    assert rep["file"] == orders and rep["store"] == store

    after = _by_id(Path(store))
    assert set(after) == {"s1", "s2", "s9"}  # existing ids kept
    s1 = after["s1"]
    assert [(e.type, e.item_id) for e in s1.events] == \
        [("view", "a"), ("view", "b"), ("purchase", "b"), ("cart", "b")]
    assert s1.events[2].price == 9.5 and s1.user_id == after["s1"].events[2].user_id
    assert [e.timestamp for e in s1.events] == sorted(e.timestamp for e in s1.events)
    assert all(e in s1.events for e in before["s1"])  # nothing of the clicks lost
    facts = {sid: compute_facts(s).n_purchase.value for sid, s in after.items()}
    assert facts == {"s1": 1, "s2": 1, "s9": 1}
    assert compute_facts(s1).purchased_items.value == 1


def test_appending_the_same_file_again_adds_nothing(cli, tmp_path):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_SID), \
        _write(tmp_path, "orders.csv", ORDERS_SID)
    store = str(tmp_path / "shop")
    assert cli("ingest", clicks, "--out", store)[0] == 0
    assert cli("ingest", orders, "--out", store, "--append", *PURCHASE)[0] == 0
    snapshot = _by_id(Path(store))
    code, rep, err = cli("ingest", orders, "--out", store, "--append", *PURCHASE)
    assert code == 0, err
    a = rep["append"]
    assert (a["duplicates_dropped"], a["events_joined"], a["events_in_new_sessions"],
            a["sessions_touched"], a["sessions_new"]) == (3, 0, 0, 0, 0)
    assert (a["store_sessions"], a["store_events"]) == (3, 8)
    assert _by_id(Path(store)) == snapshot
    # the clicks themselves, appended onto the store they built: all duplicates
    code, rep, err = cli("ingest", clicks, "--out", store, "--append")
    assert code == 0, err
    assert (rep["append"]["duplicates_dropped"], rep["append"]["events_joined"]) == (5, 0)
    assert _by_id(Path(store)) == snapshot
    manifest = json.loads((Path(store) / "manifest.json").read_text())
    assert [r["file"] for r in manifest["info"]["appends"]] == [orders, orders, clicks]
    assert manifest["info"]["ingest"]["file"] == clicks  # the first file's report stays


def test_a_different_price_is_not_a_duplicate_but_is_counted(cli, tmp_path):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_SID), \
        _write(tmp_path, "orders.csv", ORDERS_SID)
    store = str(tmp_path / "shop")
    assert cli("ingest", clicks, "--out", store)[0] == 0
    assert cli("ingest", orders, "--out", store, "--append", *PURCHASE)[0] == 0
    repriced = _write(tmp_path, "orders2.csv", ORDERS_SID.replace("9.5", "8.5"))
    code, rep, err = cli("ingest", repriced, "--out", store, "--append", *PURCHASE)
    assert code == 0, err
    a = rep["append"]
    assert (a["duplicates_dropped"], a["events_joined"], a["near_duplicates_kept"]) == (2, 1, 1)


# ---- joined by user within the gap -------------------------------------------------------
CLICKS_GAP = "\n".join([
    "user_id,timestamp,event_type,item_id",
    f"1,{_t(0)},view,a", f"1,{_t(10)},view,b",           # user 1: 10:00-10:10
    f"1,{_t(120)},view,c",                             # user 1 again at 12:00 (2nd session)
    f"2,{_t(0)},view,x",
]) + "\n"
ORDERS_GAP = "\n".join([
    "user_id,timestamp,item_id,price",
    f"1,{_t(25)},b,10",     # 15 min after user 1's first session: joins it
    f"1,{_t(300)},q,4",     # 15:00, hours after anything: a new session
    f"2,{_t(35)},x,2",      # 35 min after user 2's only click: past the 30 min gap, new
    f"7,{_t(0)},n,1",       # a user the clicks never saw: new
]) + "\n"


def test_orders_without_session_ids_join_by_user_within_the_gap(cli, tmp_path):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_GAP), \
        _write(tmp_path, "orders.csv", ORDERS_GAP)
    store = str(tmp_path / "shop")
    code, first, err = cli("ingest", clicks, "--out", store)
    assert code == 0, err
    assert first["gap_minutes"] == 30 and first["sessions"] == 3
    ids_before = set(_by_id(Path(store)))
    code, rep, err = cli("ingest", orders, "--out", store, "--append", *PURCHASE, "--human")
    assert code == 0, err
    code, rep, err = cli("ingest", orders, "--out", str(tmp_path / "fresh"), *PURCHASE)
    assert code == 0, err
    st = _by_id(Path(store))
    assert ids_before <= set(st)
    by_user: dict[str, list] = {}
    for s in sorted(st.values(), key=lambda s: s.start):
        by_user.setdefault(s.events[0].item_id, []).append(s)
    first_session = next(s for s in st.values() if s.events[0].item_id == "a")
    assert [(e.type, e.item_id) for e in first_session.events] == \
        [("view", "a"), ("view", "b"), ("purchase", "b")]
    assert compute_facts(first_session).n_purchase.value == 1
    # the late order and the two others started sessions of their own, with the ids a fresh
    # ingest of the orders gives them
    fresh = _by_id(tmp_path / "fresh")
    new = set(st) - ids_before
    assert len(new) == 3 and new <= set(fresh)
    assert all([e.type for e in st[sid].events] == ["purchase"] for sid in new)
    assert sum(len(s.events) for s in st.values()) == 8


def test_per_file_report_counts_for_a_gap_join(cli, tmp_path):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_GAP), \
        _write(tmp_path, "orders.csv", ORDERS_GAP)
    store = str(tmp_path / "shop")
    assert cli("ingest", clicks, "--out", store)[0] == 0
    code, rep, err = cli("ingest", orders, "--out", store, "--append", *PURCHASE)
    assert code == 0, err
    a = rep["append"]
    assert (a["events_joined"], a["events_joined_by_gap"], a["events_joined_by_session_id"]) \
        == (1, 1, 0)
    assert (a["sessions_touched"], a["sessions_new"], a["events_in_new_sessions"]) == (1, 3, 3)
    assert (a["gap_minutes"], a["store_sessions"], a["store_events"]) == (30, 6, 8)
    assert (rep["events"], rep["rows_read"]) == (4, 4)


def test_the_store_gap_is_reused_and_gap_minutes_overrides_it(cli, tmp_path):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_GAP), \
        _write(tmp_path, "orders.csv", ORDERS_GAP)
    store = str(tmp_path / "shop")
    assert cli("ingest", clicks, "--out", store, "--gap-minutes", "40")[0] == 0
    code, rep, err = cli("ingest", orders, "--out", store, "--append", *PURCHASE)
    assert code == 0, err
    # with the store's 40 minutes, user 2's order 35 min after the click joins it
    assert (rep["append"]["gap_minutes"], rep["append"]["events_joined"]) == (40, 2)
    other = str(tmp_path / "shop2")
    assert cli("ingest", clicks, "--out", other, "--gap-minutes", "40")[0] == 0
    code, rep, err = cli("ingest", orders, "--out", other, "--append", *PURCHASE,
                         "--gap-minutes", "20")
    assert code == 0, err
    assert (rep["append"]["gap_minutes"], rep["append"]["events_joined"]) == (20, 1)


def test_a_run_bridging_two_sessions_joins_the_nearest_and_merges_nothing(cli, tmp_path):
    clicks = _write(tmp_path, "clicks.csv", "\n".join([
        "user_id,timestamp,event_type,item_id",
        f"1,{_t(0)},view,a", f"1,{_t(10)},view,b",     # A: 10:00-10:10
        f"1,{_t(70)},view,c", f"1,{_t(80)},view,d",    # B: 11:10-11:20 (60 min after A)
    ]) + "\n")
    fill = _write(tmp_path, "fill.csv", "\n".join([
        "user_id,timestamp,event_type,item_id",
        f"1,{_t(30)},view,x",   # 20 after A, 40 before B: A
        f"1,{_t(50)},view,y",   # 40 after A, 20 before B: B
    ]) + "\n")
    store = str(tmp_path / "shop")
    assert cli("ingest", clicks, "--out", store)[0] == 0
    ids = set(_by_id(Path(store)))
    code, rep, err = cli("ingest", fill, "--out", store, "--append")
    assert code == 0, err
    a = rep["append"]
    assert (a["bridging_runs"], a["events_joined"], a["sessions_touched"], a["sessions_new"]) \
        == (1, 2, 2, 0)
    st = _by_id(Path(store))
    assert set(st) == ids  # two sessions still, same ids
    items = sorted([e.item_id for e in s.events] for s in st.values())
    assert items == [["a", "b", "x"], ["y", "c", "d"]]


def test_orders_joining_a_clicks_file_with_session_ids_by_user(cli, tmp_path):
    """Clicks carry session ids, orders only users: the orders join by user and time."""
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_SID), _write(
        tmp_path, "orders.csv", f"user_id,timestamp,item_id\n1,{_t(20)},b\n")
    store = str(tmp_path / "shop")
    assert cli("ingest", clicks, "--out", store)[0] == 0
    code, rep, err = cli("ingest", orders, "--out", store, "--append", *PURCHASE)
    assert code == 0, err
    assert (rep["append"]["events_joined_by_gap"], rep["append"]["sessions_new"]) == (1, 0)
    assert compute_facts(_by_id(Path(store))["s1"]).n_purchase.value == 1


def test_logs_without_user_ids_join_by_session_id(cli, tmp_path):
    """A click log and a buys file with session ids only (no users at all): each session's
    anonymous user is keyed by its id, so the buys land in the clicks' sessions."""
    clicks = _write(tmp_path, "clicks.csv", "session_id,timestamp,item_id\n"
                    f"11,{_t(0)},a\n11,{_t(3)},b\n12,{_t(5)},c\n")
    buys = _write(tmp_path, "buys.csv", f"session_id,timestamp,item_id,price,quantity\n"
                  f"11,{_t(4)},b,20,1\n13,{_t(9)},z,5,2\n")
    store = str(tmp_path / "shop")
    code, first, err = cli("ingest", clicks, "--out", store, "--map", "event_type_constant=view")
    assert code == 0, err
    assert first["users_known"] is False
    code, rep, err = cli("ingest", buys, "--out", store, "--append", *PURCHASE)
    assert code == 0, err
    a = rep["append"]
    assert (a["events_joined_by_session_id"], a["sessions_new"]) == (1, 1)
    st = _by_id(Path(store))
    assert [e.type for e in st["11"].events] == ["view", "view", "purchase"]
    assert st["11"].events[-1].attrs == {"quantity": 1}


def test_a_semicolon_orders_file_with_na_tokens_goes_the_general_way(cli, tmp_path):
    clicks = _write(tmp_path, "clicks.csv", CLICKS_GAP)
    orders = _write(tmp_path, "orders.txt", "\n".join([
        "customer;ordered_at;sku;amount;coupon",
        f"1;{_t(25)};b;NA;NA",
        f"2;{_t(5)};x;12.5;WELCOME",
    ]) + "\n")
    store = str(tmp_path / "shop")
    assert cli("ingest", clicks, "--out", store)[0] == 0
    code, rep, err = cli("ingest", orders, "--out", store, "--append", "--delimiter", ";",
                         "--null", "NA", "--map", "user_id=customer",
                         "--map", "timestamp=ordered_at", "--map", "item_id=sku",
                         "--map", "price=amount", *PURCHASE)
    assert code == 0, err
    assert (rep["rows_skipped"], rep["events"]) == (0, 2)
    assert (rep["append"]["events_joined"], rep["append"]["sessions_touched"]) == (2, 2)
    buys = [e for s in read_store(store) for e in s.events if e.type == "purchase"]
    assert sorted((e.item_id, e.price, e.attrs.get("coupon")) for e in buys) == \
        [("b", None, None), ("x", 12.5, "WELCOME")]


# ---- refusals ------------------------------------------------------------------------------
def test_append_onto_a_folder_that_is_not_a_store_is_refused(cli, tmp_path):
    orders = _write(tmp_path, "orders.csv", ORDERS_GAP)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (notes, empty, tmp_path / "absent"):
        code, e, err = cli("ingest", orders, "--out", str(folder), "--append", *PURCHASE)
        assert code == 2 and "Traceback" not in err
        assert e["error"] == "StoreError" and str(folder) in e["message"]
        assert "--append" in e["message"]
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]
    assert not any(empty.iterdir()) and not (tmp_path / "absent").exists()
    # an index folder's manifest-less sessions store and a fitted model's folder, too
    model = tmp_path / "ix" / "model-0123"
    model.mkdir(parents=True)
    (tmp_path / "ix" / "config.json").write_text(json.dumps({"stores": {}}))
    (model / "manifest.json").write_text(json.dumps({"heads": []}))
    for folder in (tmp_path / "ix", model):
        code, e, _ = cli("ingest", orders, "--out", str(folder), "--append", *PURCHASE)
        assert code == 2 and e["error"] == "StoreError" and str(folder) in e["message"]


def test_append_with_another_pseudonym_key_is_refused(cli, tmp_path, monkeypatch):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_GAP), \
        _write(tmp_path, "orders.csv", ORDERS_GAP)
    store = tmp_path / "shop"
    assert cli("ingest", clicks, "--out", str(store))[0] == 0
    before = (store / "manifest.json").read_text()
    monkeypatch.setenv("BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY", "another-key")
    code, e, _ = cli("ingest", orders, "--out", str(store), "--append", *PURCHASE)
    assert code == 2 and e["field"] == "pseudonym_key" and "could never match" in e["message"]
    code, e, _ = cli("ingest", orders, "--out", str(store), "--append", *PURCHASE,
                     "--no-pseudonymize")
    assert code == 2 and e["field"] == "pseudonym_key"
    assert (store / "manifest.json").read_text() == before


def test_a_strict_bad_row_appends_nothing(cli, tmp_path):
    clicks = _write(tmp_path, "clicks.csv", CLICKS_GAP)
    bad = _write(tmp_path, "orders.csv", f"user_id,timestamp,item_id,price\n1,{_t(25)},b,x\n")
    store = tmp_path / "shop"
    assert cli("ingest", clicks, "--out", str(store))[0] == 0
    before = sorted(p.name for p in store.iterdir()), (store / "manifest.json").read_text()
    code, e, _ = cli("ingest", bad, "--out", str(store), "--append", *PURCHASE)
    assert code == 2 and e["error"] == "IngestError" and e["field"] == "price"
    assert (sorted(p.name for p in store.iterdir()), (store / "manifest.json").read_text()) \
        == before


def test_a_synthetic_store_takes_appends(cli, tmp_path):
    sessions = generate(5, seed=3).sessions
    write_store(sessions, tmp_path / "syn")
    s = sessions[0]
    f = _write(tmp_path, "more.csv", f"session_id,user_id,timestamp,event_type,item_id\n"
               f"{s.session_id},{s.user_id},{s.end.isoformat()},purchase,zz\n")
    # synthetic users are not pseudonyms: the file's raw ids must stay raw to match them
    code, rep, err = cli("ingest", f, "--out", str(tmp_path / "syn"), "--append",
                         "--no-pseudonymize")
    assert code == 0, err
    assert rep["append"]["events_joined_by_session_id"] == 1
    got = _by_id(tmp_path / "syn")[s.session_id]
    assert got.events[-1].item_id == "zz" and got.label == s.label
    assert len(got.events) == len(s.events) + 1


# ---- a crash mid-append --------------------------------------------------------------------
@pytest.mark.parametrize("point", [PREPARED, COMMITTED])
def test_sigkill_mid_append_leaves_one_whole_store(tmp_path, point):
    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_SID), \
        _write(tmp_path, "orders.csv", ORDERS_SID)
    store = tmp_path / "shop"
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(tmp_path / "home"),
                        "BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY": "append-test-key"}

    def ingest(*args: str, crash: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "behavior_rag.cli", "ingest", *args],
                              capture_output=True, text=True, timeout=300,
                              env=env | ({ENV: crash} if crash else {}))

    assert ingest(clicks, "--out", str(store)).returncode == 0
    old = _by_id(store)
    p = ingest(orders, "--out", str(store), "--append", *PURCHASE, crash=point)
    assert p.returncode == -9, p.stderr[-2000:]
    after = _by_id(store)  # readable: no half-written manifest, every listed file there
    if point == PREPARED:
        assert after == old
    else:
        assert set(after) == {"s1", "s2", "s9"}
        assert compute_facts(after["s1"]).n_purchase.value == 1
    # the next append commits whole and sweeps what the crash left unlisted
    p = ingest(orders, "--out", str(store), "--append", *PURCHASE)
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout)
    assert rep["append"]["store_events"] == 8
    assert rep["append"]["duplicates_dropped"] == (0 if point == PREPARED else 3)
    listed = json.loads((store / "manifest.json").read_text())
    files = {f for g in listed["segments"] for f in (g["sessions_file"], g["events_file"])}
    files |= {listed["tombstones"], "manifest.json"} - {None}
    assert {p.name for p in store.iterdir()} == files


def test_a_second_writer_waits_then_is_told(cli, tmp_path, monkeypatch):
    from behavior_rag.ingest.lock import store_lock

    clicks, orders = _write(tmp_path, "clicks.csv", CLICKS_SID), \
        _write(tmp_path, "orders.csv", ORDERS_SID)
    store = tmp_path / "shop"
    assert cli("ingest", clicks, "--out", str(store))[0] == 0
    monkeypatch.setenv("BEHAVIOR_RAG_INDEX__LOCK_TIMEOUT_S", "0.3")
    with store_lock(store):  # another append (or a replacing ingest) in progress
        code, e, _ = cli("ingest", orders, "--out", str(store), "--append", *PURCHASE)
        assert code == 2 and e["error"] == "WriteConflict" and str(store) in e["message"]
        code, e, _ = cli("ingest", clicks, "--out", str(store))
        assert code == 2 and e["error"] == "WriteConflict"
    assert cli("ingest", orders, "--out", str(store), "--append", *PURCHASE)[0] == 0
