"""Label files join on the ids a shop knows (raw user ids pseudonymised as at ingest, source
session ids), in CSV, Parquet and JSONL; every unusable row is listed in ONE error, or skipped
and counted in lenient mode; and ``fit`` fits from a target or a label file through the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest

from behavior_rag.errors import DataError
from behavior_rag.ingest.load import load_events
from behavior_rag.labels import apply_label_file, read_label_file
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.taxonomy import load_taxonomy

LOG = """user_id,session_id,timestamp,event_type,item_id
alice,S1,2024-01-01T10:00:00,view,i1
alice,S1,2024-01-01T10:01:00,purchase,i1
alice,S2,2024-01-02T10:00:00,view,i2
bob,S3,2024-01-01T11:00:00,view,i3
bob,S3,2024-01-01T11:02:00,view,i4
carol,SHARED,2024-01-03T11:00:00,view,i3
dave,SHARED,2024-01-03T12:00:00,view,i5
"""
TAX = load_taxonomy("purchase_intent")


@pytest.fixture()
def shop(tmp_path, settings):
    """Sessions ingested from a log with raw user ids and source session ids."""
    log = tmp_path / "log.csv"
    log.write_text(LOG)
    return load_events(log, "auto", settings=settings).sessions


def _csv(tmp_path, text: str, name: str = "labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _join(path, sessions, settings, **kw):
    return apply_label_file(read_label_file(path), sessions, TAX, settings, **kw)


def test_session_and_user_rows_join_on_the_ids_the_shop_knows(tmp_path, shop, settings):
    assert all(s.user_id.startswith("u_") for s in shop)  # ingest pseudonymised them
    f = _csv(tmp_path, "session_id,user_id,label,source,weight,note\n"
                       "S1,,will_buy,orders,2,x\n"
                       ",alice,no_purchase,crm,,y\n"        # alice's other sessions
                       ",bob,no_purchase,,,\n"
                       "S1,,will_buy,orders,2,dup\n")       # a repeat that agrees: fine
    j = _join(f, shop, settings)
    got = {s.session_id: s.label for s in j.sessions}
    assert got == {"S1": "will_buy", "S2": "no_purchase", "S3": "no_purchase"}
    assert (j.rows, j.rows_used, j.session_rows, j.user_rows) == (4, 4, 2, 2)
    assert j.duplicate_rows == 1 and j.user_label_overridden == 1  # S1: session row wins
    assert j.sessions_unlabelled == 2 and j.labels == {"will_buy": 1, "no_purchase": 2}
    assert j.weights == {"S1": 2.0} and j.sources["S2"] == "crm"
    assert j.ignored_columns == ["note"]
    assert "sessions" not in j.model_dump()
    # a raw id already in pseudonym form matches the same user
    alice = next(s.user_id for s in shop if s.session_id == "S1")
    j2 = _join(_csv(tmp_path, f"user_id,label\n{alice},will_buy\n", "p.csv"), shop, settings)
    assert {s.session_id for s in j2.sessions} == {"S1", "S2"}


def test_a_shared_source_session_id_labels_each_users_part(tmp_path, shop, settings):
    parts = sorted(s.session_id for s in shop if s.session_id.startswith("SHARED"))
    assert len(parts) == 2  # ingest qualified the id per user
    j = _join(_csv(tmp_path, "session_id,label\nSHARED,no_purchase\n"), shop, settings)
    assert sorted(s.session_id for s in j.sessions) == parts
    j = _join(_csv(tmp_path, "session_id,user_id,label\nSHARED,dave,no_purchase\n"), shop,
              settings)
    [only] = j.sessions
    assert only.session_id in parts and only.events[0].item_id == "i5"


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "tsv"])
def test_parquet_jsonl_and_tsv_read_alike(tmp_path, fmt):
    sessions = generate(20, seed=1).sessions
    df = pl.DataFrame({"session_id": [sessions[0].session_id, None],
                       "user_id": [None, sessions[3].user_id],
                       "label": ["will_buy", "no_purchase"], "weight": [1.5, None]})
    p = tmp_path / f"l.{fmt}"
    if fmt == "parquet":
        df.write_parquet(p)
    elif fmt == "jsonl":
        df.write_ndjson(p)
    else:
        df.write_csv(p, separator="\t")
    s = Settings(ingest={"pseudonym_key": "k"})
    j = apply_label_file(read_label_file(p), sessions, TAX, s)
    mine = {x.session_id for x in sessions if x.user_id == sessions[3].user_id}
    assert {x.session_id for x in j.sessions} == mine | {sessions[0].session_id}
    assert j.weights[sessions[0].session_id] == 1.5


def test_numeric_ids_in_parquet_match_text_ids(tmp_path, settings):
    log = tmp_path / "log.csv"
    log.write_text("user_id,session_id,timestamp,event_type,item_id\n"
                   "42,7,2024-01-01T10:00:00,view,i1\n")
    sessions = load_events(log, "auto", settings=settings).sessions
    p = tmp_path / "l.parquet"
    pl.DataFrame({"user_id": [42.0], "label": ["will_buy"]}).write_parquet(p)  # 42.0 -> "42"
    assert _join(p, sessions, settings).sessions_labelled == 1
    pl.DataFrame({"session_id": [7], "label": ["will_buy"]}).write_parquet(p)
    assert _join(p, sessions, settings).sessions_labelled == 1


BAD = ("session_id,user_id,label,weight\n"
       "S1,,will_buy,\n"            # row 1 ok
       "NOPE,,will_buy,\n"          # row 2 unknown session
       ",zed,no_purchase,\n"        # row 3 unknown user
       "S3,,will_buy,\n"            # row 4 conflicts with row 5
       "S3,,no_purchase,\n"         # row 5
       "S2,,maybe,\n"               # row 6 label outside the taxonomy
       ",,will_buy,\n"              # row 7 no id
       "S2,,,\n"                    # row 8 no label
       "S2,,will_buy,-1\n"          # row 9 bad weight
       "S1,bob,will_buy,\n"         # row 10 S1 is alice's
       ",alice,will_buy,\n"         # row 11 conflicts with row 12
       ",alice,no_purchase,\n")     # row 12


def test_every_unusable_row_is_listed_in_one_error(tmp_path, shop, settings):
    f = _csv(tmp_path, BAD)
    with pytest.raises(DataError) as e:
        _join(f, shop, settings)
    err = e.value
    assert err.context["problem_count"] == 11
    assert err.context["counts"] == {"unknown_session": 1, "unknown_user": 1, "conflict": 4,
                                     "unknown_label": 1, "missing_id": 1, "missing_label": 1,
                                     "bad_weight": 1, "user_mismatch": 1}
    assert err.file == str(f) and err.row == 2 and err.value == "NOPE"
    msg = str(err)
    for bit in ("11 label row(s) cannot be used", "unknown session id(s) (row 2 'NOPE')",
                "conflicting labels (row 4 'S3', row 5 'S3', row 11 'alice'",
                "outside the taxonomy (row 6 'maybe')", "['will_buy', 'no_purchase']",
                "--lenient"):
        assert bit in msg, (bit, msg)
    assert json.dumps(err.to_dict())  # the CLI prints it as JSON
    rows = {(p["reason"], p["row"]) for p in err.context["problems"]}
    assert ("user_mismatch", 10) in rows and ("bad_weight", 9) in rows


def test_lenient_mode_skips_and_counts_them(tmp_path, shop, settings):
    f = _csv(tmp_path, BAD)
    j = _join(f, shop, settings, lenient=True)
    assert {s.session_id: s.label for s in j.sessions} == {"S1": "will_buy"}
    assert j.mode == "lenient" and j.rows == 12 and j.rows_used == 1
    assert sum(j.skipped.values()) == 11 and j.skipped["conflict"] == 4
    # the setting works too
    lenient = settings.model_copy(update={"ingest": settings.ingest.model_copy(
        update={"mode": "lenient"})})
    assert _join(f, shop, lenient).sessions_labelled == 1


def test_more_refusals(tmp_path, shop, settings):
    with pytest.raises(DataError, match="label file not found"):
        read_label_file(tmp_path / "none.csv")
    with pytest.raises(DataError, match="needs a `label` column") as e:
        read_label_file(_csv(tmp_path, "sesion_id,label\nS1,will_buy\n"))
    assert "sesion_id" in e.value.value
    with pytest.raises(DataError, match="must be .csv"):
        read_label_file(_csv(tmp_path, "x", "labels.xlsx"))
    # lenient, but nothing usable at all: still an error
    with pytest.raises(DataError, match="labels any session"):
        _join(_csv(tmp_path, "session_id,label\nNOPE,will_buy\n"), shop, settings,
              lenient=True)


# ---------------------------------------------------------------- CLI


def _unlabelled_store(path):
    from behavior_rag.ingest.store import write_store

    sessions = [s.model_copy(update={"label": None}) for s in generate(300, seed=1).sessions]
    write_store(sessions, path)
    return sessions


def _run(env, *args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                          text=True, env=os.environ | env, timeout=600)


def test_cli_fit_refusals(tmp_path):
    store = tmp_path / "store"
    _unlabelled_store(store)
    env = {"BEHAVIOR_RAG_HOME": str(tmp_path / "home")}
    for args, says in [
        (["--target", "purchase", "--input", "before:buy"], "unknown event type"),
        (["--input", "first:5"], "give --target too"),
        (["--target", "purchase", "--labels", "x.csv"], "not both"),
        (["--target", "nope"], "no shipped target"),
        (["--target", "purchase", "--taxonomy", "personas"], "gives ['will_buy'"),
    ]:
        p = _run(env, "fit", str(store), "--index", str(tmp_path / "ix"), *args)
        assert p.returncode == 2, (args, p.stderr)
        assert says in json.loads(p.stderr.strip().splitlines()[-1])["message"], (args, p.stderr)
    f = _csv(tmp_path, "session_id,label\nnope,will_buy\n")
    p = _run(env, "fit", str(store), "--index", str(tmp_path / "ix"), "--taxonomy",
             "purchase_intent", "--labels", str(f))
    out = json.loads(p.stderr.strip().splitlines()[-1])
    assert p.returncode == 2 and out["counts"] == {"unknown_session": 1}
    assert not (tmp_path / "ix" / "config.json").exists()


def test_cli_fit_refuses_a_target_that_leaves_nothing(tmp_path):
    from behavior_rag.ingest.store import write_store
    from behavior_rag.types import Event, Session

    s = generate(40, seed=3).sessions
    cart_first = [x.model_copy(update={"label": None, "events": [
        Event(**(x.events[0].model_dump() | {"type": "cart"})), *x.events[1:]]}) for x in s]
    write_store([Session.model_validate(x.model_dump()) for x in cart_first], tmp_path / "st")
    p = _run({"BEHAVIOR_RAG_HOME": str(tmp_path / "home")}, "fit", str(tmp_path / "st"),
             "--index", str(tmp_path / "ix"), "--target", "purchase", "--llm", "none")
    assert p.returncode == 2
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert "nothing before the prediction point" in err["message"] and err["field"] == "input"


def test_cli_fit_from_a_target_on_an_unlabelled_store(tmp_path, embed_home):
    from tests.conftest import cli_json

    store = tmp_path / "store"
    _unlabelled_store(store)
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}
    [out] = cli_json(env, "fit", str(store), "--index", str(tmp_path / "ix"), "--target",
                     "purchase", "--llm", "none", "--cascade", "never", "--heads", "facts")
    lab = out["labelling"]
    assert lab["target"] == "purchase" and lab["input"] == "before:cart,purchase"
    assert lab["train"]["dropped_empty"] == 2 and sum(lab["train"]["labels"].values()) == 298
    assert out["dev"]["n_train"] + out["dev"]["n_dev"] == 298
    assert (tmp_path / "ix" / "config.json").exists()
    # the same store, labelled by a file of raw user ids
    users = sorted({s.user_id for s in generate(300, seed=1).sessions})
    f = tmp_path / "labels.csv"
    f.write_text("user_id,label\n" + "".join(
        f"{u},{'will_buy' if i % 2 else 'no_purchase'}\n" for i, u in enumerate(users)))
    [imp] = cli_json(env, "labels", "import", str(f), "--index", str(tmp_path / "ix"),
                     "--taxonomy", "purchase_intent", "--lenient")
    # the index holds the training users: the dev users' rows are unknown there, and skipped
    assert imp["rows"] == len(users) and imp["sessions_labelled"] == imp["sessions_in"] > 0
    assert imp["skipped"] == {"unknown_user": len(users) - imp["rows_used"]}
    [imp] = cli_json(env, "labels", "import", str(f), "--index", str(tmp_path / "ix"),
                     "--taxonomy", "purchase_intent", "--store", str(store))
    assert imp["sessions_labelled"] == 300 and imp["rows_used"] == len(users)
