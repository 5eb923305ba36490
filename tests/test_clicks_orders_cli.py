"""A clicks file plus an orders file give a fitted purchase model in four commands (issue 31),
on real Taobao events split into two exports of different shapes, run as a user runs them:

    behavior-rag ingest clicks --out STORE ...
    behavior-rag ingest orders --out STORE --append --map ...
    behavior-rag fit STORE --index IX --target purchase
    behavior-rag classify STORE --index IX

Two layouts: orders without session ids (they join the clicks' sessions by user within the
session gap), and the RecSys 2015 layout (a click log and a buys file that share session ids,
no users; the model sees the clicks alone). The buys never reach what the model sees."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.heads.store import read_manifest
from behavior_rag.ingest.store import read_store, write_store
from behavior_rag.labels import load_target
from tests.conftest import TAOBAO, cli_json, need

SHANGHAI = timezone(timedelta(hours=8))
GAP_S = 30 * 60
CLICKS_MAP = ("--map", "user_id=Customer ID", "--map", "item_id=Product", "--map",
              "category=Category", "--map", "event_type=Action", "--map", "timestamp=Event Time",
              "--type-map", "pv=view", "--null", "Category=-", "--timezone", "Asia/Shanghai")
ORDERS_MAP = ("--delimiter", "tab", "--null", "\\N", "--map", "user_id=buyer", "--map",
              "item_id=sku", "--map", "category=cat", "--map", "timestamp=paid_at", "--map",
              "event_type_constant=purchase")
RECSYS_CLICKS = ("--map", "session_id=SessionId", "--map", "timestamp=Timestamp", "--map",
                 "item_id=ItemId", "--map", "category=Category", "--map", "event_type=Type",
                 "--type-map", "pv=view")
RECSYS_BUYS = ("--map", "session_id=SessionId", "--map", "timestamp=Timestamp", "--map",
               "item_id=ItemId", "--map", "price=Price", "--map", "event_type_constant=purchase")
NO_LLM = ("--llm", "none")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """The whole users among the first rows of the Taobao dev file (a few hundred sessions)."""
    raw = pl.read_csv(need(TAOBAO), n_rows=2500)
    raw = raw.filter(pl.col("user_id") != raw["user_id"][-1])
    return raw.sort(["user_id", "timestamp"]).rows(named=True)


@pytest.fixture()
def env(embed_home) -> dict:
    return {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
            "BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY": "clicks-orders-test"}


def _shop_files(rows: list[dict], d: Path) -> tuple[str, str]:
    """clicks.csv (comma, a header of its own, ISO times with an offset, '-' for a missing
    category) and orders.tsv (tab, other names, unix seconds, MySQL's \\N for missing)."""
    with open(d / "clicks.csv", "w") as f:
        f.write("Customer ID,Product,Category,Action,Event Time\n")
        for i, r in enumerate(r for r in rows if r["behavior_type"] != "buy"):
            t = datetime.fromtimestamp(r["timestamp"], SHANGHAI).isoformat()
            f.write(f"{r['user_id']},{r['item_id']},{'-' if i % 7 == 0 else r['category_id']},"
                    f"{r['behavior_type']},{t}\n")
    with open(d / "orders.tsv", "w") as f:
        f.write("buyer\tsku\tcat\tpaid_at\n")
        for i, r in enumerate(r for r in rows if r["behavior_type"] == "buy"):
            cat = "\\N" if i % 3 == 0 else r["category_id"]
            f.write(f"{r['user_id']}\t{r['item_id']}\t{cat}\t{r['timestamp']}\n")
    return str(d / "clicks.csv"), str(d / "orders.tsv")


def _recsys_files(rows: list[dict], d: Path) -> tuple[str, str, dict[int, set[str]]]:
    """clicks.dat (CSV, session ids, ISO UTC with milliseconds) and buys.jsonl (the same
    session ids): sessions cut at 30 minutes per user, then the users dropped, as RecSys 2015
    ships them. Also the event types of each session id."""
    sid: dict[int, int] = {}
    last: dict[int, int] = {}
    kinds: dict[int, set[str]] = {}
    with open(d / "clicks.dat", "w") as c, open(d / "buys.jsonl", "w") as b:
        c.write("SessionId,Timestamp,ItemId,Category,Type\n")
        for r in rows:
            u, t = r["user_id"], r["timestamp"]
            if u not in last or t - last[u] > GAP_S:
                sid[u] = 10_000 + len(kinds)
                kinds[sid[u]] = set()
            last[u] = t
            kinds[sid[u]].add(r["behavior_type"])
            ts = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            if r["behavior_type"] == "buy":
                b.write(json.dumps({"SessionId": sid[u], "Timestamp": ts + "Z",
                                    "ItemId": r["item_id"], "Price": None, "Quantity": 1}) + "\n")
            else:
                c.write(f"{sid[u]},{ts}Z,{r['item_id']},{r['category_id']},"
                        f"{r['behavior_type']}\n")
    return str(d / "clicks.dat"), str(d / "buys.jsonl"), kinds


def _seen(p: dict) -> dict:
    """A prediction without its timings: what the model made of the session."""
    return {k: v for k, v in p.items() if k != "timings"}


def _near_click(rows: list[dict]) -> set[tuple[str, int]]:
    """(item, time) of the buys with a click of the same user at most the gap away."""
    clicks: dict[int, list[int]] = {}
    for r in rows:
        if r["behavior_type"] != "buy":
            clicks.setdefault(r["user_id"], []).append(r["timestamp"])
    return {(str(r["item_id"]), r["timestamp"]) for r in rows if r["behavior_type"] == "buy"
            and any(abs(r["timestamp"] - t) <= GAP_S for t in clicks.get(r["user_id"], []))}


def test_orders_without_session_ids_join_by_user_and_fit_a_purchase_model(
        rows, env, tmp_path):
    clicks, orders = _shop_files(rows, tmp_path)
    store, ix = str(tmp_path / "shop"), str(tmp_path / "ix")
    n_buys = sum(r["behavior_type"] == "buy" for r in rows)
    cli_json(env, "ingest", clicks, "--out", store, *CLICKS_MAP)
    a = cli_json(env, "ingest", orders, "--out", store, "--append", *ORDERS_MAP)[0]["append"]
    assert a["events_joined_by_session_id"] == 0 and a["duplicates_dropped"] == 0
    assert a["events_joined_by_gap"] + a["events_in_new_sessions"] == n_buys
    near = _near_click(rows)
    assert a["events_joined_by_gap"] >= len(near) > 0
    sessions = read_store(store)
    for s in sessions:  # a buy the gap away from a click sits in that click's session
        for e in s.events:
            if e.type == "purchase" and (e.item_id, int(e.timestamp.timestamp())) in near:
                assert any(x.type != "purchase" for x in s.events), s.session_id
    fit = cli_json(env, "fit", store, "--index", ix, "--target", "purchase", *NO_LLM)[0]
    lab = fit["labelling"]
    assert (lab["target"], lab["input"]) == ("purchase", "before:cart,purchase")
    assert lab["train"]["labels"]["will_buy"] > 0
    assert read_manifest(BehaviorRAG(index_path=ix).model_path()).target.name == "purchase"
    _same_output_without_what_follows_the_point(sessions, env, ix, tmp_path)


def _same_output_without_what_follows_the_point(sessions, env, ix, tmp_path):
    """classify of a session with a buy == classify of it cut at the prediction point."""
    target = load_target("purchase")
    buyers = [s for s in sessions if any(e.type == "purchase" for e in s.events)
              and s.events[0].type not in ("cart", "purchase")]
    assert len(buyers) >= 5
    write_store(buyers, tmp_path / "with_buys")
    write_store([target.cut(s) for s in buyers], tmp_path / "cut")
    full = cli_json(env, "classify", str(tmp_path / "with_buys"), "--index", ix, *NO_LLM)
    cut = cli_json(env, "classify", str(tmp_path / "cut"), "--index", ix, *NO_LLM)
    assert [_seen(p) for p in full] == [_seen(p) for p in cut]
    assert "purchase" not in json.dumps(full).replace("no_purchase", "")


def test_recsys_layout_clicks_and_buys_by_session_id_predict_from_the_clicks(
        rows, env, tmp_path):
    clicks, buys, kinds = _recsys_files(rows, tmp_path)
    store, ix = str(tmp_path / "shop"), str(tmp_path / "ix")
    first = cli_json(env, "ingest", clicks, "--out", store, *RECSYS_CLICKS)[0]
    assert first["users_known"] is False
    a = cli_json(env, "ingest", buys, "--out", store, "--append", *RECSYS_BUYS)[0]["append"]
    n_buys = sum(r["behavior_type"] == "buy" for r in rows)
    with_clicks = {k for k, v in kinds.items() if v - {"buy"}}
    joined = sum(1 for line in open(buys) if json.loads(line)["SessionId"] in with_clicks)
    assert (a["events_joined_by_session_id"], a["events_joined_by_gap"]) == (joined, 0)
    assert a["events_in_new_sessions"] == n_buys - joined
    assert a["sessions_new"] == sum(1 for v in kinds.values() if v == {"buy"})
    fit = cli_json(env, "fit", store, "--index", ix, "--target", "purchase", "--input",
                   "types:view,cart,fav", *NO_LLM)[0]
    lab = fit["labelling"]
    assert lab["input"] == "types:view,cart,fav"
    assert lab["train"]["labels"]["will_buy"] == sum(1 for k in with_clicks
                                                     if "buy" in kinds[k])
    # the clicks alone, ingested on their own, classify exactly as the joined sessions do
    only = str(tmp_path / "clicks_only")
    cli_json(env, "ingest", clicks, "--out", only, *RECSYS_CLICKS)
    joined_preds = {p["session_id"]: _seen(p) for p in cli_json(
        env, "classify", store, "--index", ix, *NO_LLM)}
    click_preds = cli_json(env, "classify", only, "--index", ix, *NO_LLM)
    assert len(click_preds) == len(with_clicks)
    assert all(joined_preds[p["session_id"]] == _seen(p) for p in click_preds)
