"""Corrupted or edited session stores (issue 30.1, 30.7): every segment path a manifest names is
confined to the store folder, and an event segment that lost rows is a clean StoreError naming
the file, never a traceback (``profile`` compared naive and aware datetimes) or a session
quietly missing events."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from behavior_rag.cli.app import main
from behavior_rag.errors import StoreError
from behavior_rag.ingest.store import SessionStore, StoreManifest, open_store, write_store
from behavior_rag.synth import generate


def _store(path: Path, n: int = 12, seed: int = 5) -> list:
    sessions = generate(n, seed=seed).sessions
    write_store(sessions, path)
    return sessions


def _render(capsys, monkeypatch, path: Path) -> tuple[int, dict | None, str]:
    monkeypatch.setattr(sys, "argv", ["behavior-rag", "render", str(path), "--limit", "0"])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    _, err = capsys.readouterr()
    return code, (json.loads(err.strip().splitlines()[-1]) if code else None), err


def _edit_manifest(path: Path, **seg_update) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m["segments"][0].update(seg_update)
    (path / "manifest.json").write_text(json.dumps(m))


# ---- 30.1: paths confined ------------------------------------------------------------------
@pytest.mark.parametrize("field", ["sessions_file", "events_file"])
def test_segment_paths_out_of_the_store_are_refused(tmp_path, capsys, monkeypatch, field):
    _store(tmp_path / "other")
    _store(tmp_path / "mine", seed=6)
    seg = json.loads((tmp_path / "other" / "manifest.json").read_text())["segments"][0]
    for bad in (f"../other/{seg[field]}", str(tmp_path / "other" / seg[field])):
        path = tmp_path / f"mine-{abs(hash(bad))}"
        path.mkdir()
        for f in (tmp_path / "mine").iterdir():
            (path / f.name).write_bytes(f.read_bytes())
        _edit_manifest(path, **{field: bad})
        code, e, err = _render(capsys, monkeypatch, path)
        assert code == 2 and "Traceback" not in err
        assert e["error"] == "StoreError" and "not a file name inside the store" in e["message"]
        assert field in e["message"]


def test_a_symlink_out_of_the_store_is_refused(tmp_path, capsys, monkeypatch):
    _store(tmp_path / "other")
    _store(tmp_path / "mine", seed=6)
    mine = json.loads((tmp_path / "mine" / "manifest.json").read_text())["segments"][0]
    theirs = json.loads((tmp_path / "other" / "manifest.json").read_text())["segments"][0]
    link = tmp_path / "mine" / mine["events_file"]
    link.unlink()
    link.symlink_to(tmp_path / "other" / theirs["events_file"])
    code, e, _ = _render(capsys, monkeypatch, tmp_path / "mine")
    assert code == 2 and (e["error"], e["field"]) == ("StoreError", "events_file")
    assert "links out of it are refused" in e["message"]


def test_manifest_models_refuse_paths_where_config_json_is_read():
    seg = {"name": "seg-1", "sessions_file": "seg-1.sessions.parquet",
           "events_file": "/elsewhere/seg-1.events.parquet", "sessions": 1, "events": 1}
    base = {"sessions": 1, "events": 1, "users": 1, "labels": {},
            "created": "2024-01-01T00:00:00Z"}
    with pytest.raises(ValueError, match="not a file name inside the store folder"):
        StoreManifest.model_validate(base | {"segments": [seg]})
    with pytest.raises(ValueError, match="not a file name inside the store folder"):
        StoreManifest.model_validate(base | {"tombstones": "../../x/tomb.parquet"})


def test_store_inside_an_index_checks_segment_paths_too(tmp_path):
    _store(tmp_path / "a")
    manifest = open_store(tmp_path / "a").manifest
    assert manifest is not None
    bad = manifest.model_copy(update={"segments": [manifest.segments[0].model_copy(
        update={"events_file": "../a/" + manifest.segments[0].events_file})]})
    st = SessionStore(tmp_path / "a", bad, own_manifest=False)  # as an index's config.json
    with pytest.raises(StoreError, match="events_file") as e:
        st.get_many(st.ids()[:1])
    assert e.value.field == "events_file"


# ---- 30.7: an event segment with rows removed ----------------------------------------------
@pytest.mark.parametrize("drop", ["first", "last", "middle"])
def test_event_segment_with_rows_removed_is_a_store_error(tmp_path, capsys, monkeypatch, drop):
    ss = _store(tmp_path / "st")
    seg = json.loads((tmp_path / "st" / "manifest.json").read_text())["segments"][0]
    ev = tmp_path / "st" / seg["events_file"]
    frame = pl.read_parquet(ev)
    i = {"first": 0, "last": frame.height - 1, "middle": frame.height // 2}[drop]
    frame.filter(pl.int_range(frame.height) != i).write_parquet(ev)
    code, e, err = _render(capsys, monkeypatch, tmp_path / "st")
    assert code == 2 and "Traceback" not in err
    assert e["error"] == "StoreError" and e["file"] == str(ev)
    assert "rows were removed" in e["message"]
    with pytest.raises(StoreError):  # the profile's path: a user's sessions, one by one
        open_store(tmp_path / "st").of_user(ss[0].user_id)


def test_event_rows_shifted_within_a_segment_are_caught(tmp_path):
    """Same row count, but one session's events moved: sessions must get their own events."""
    ss = _store(tmp_path / "st")
    seg = json.loads((tmp_path / "st" / "manifest.json").read_text())["segments"][0]
    ev = tmp_path / "st" / seg["events_file"]
    frame = pl.read_parquet(ev)
    frame = pl.concat([frame.slice(1), frame.slice(0, 1)])  # rotate by one row
    frame.write_parquet(ev)
    with pytest.raises(StoreError, match="corrupt|rows were removed"):
        open_store(tmp_path / "st").get_many([s.session_id for s in ss])


def test_naive_timestamps_in_a_segment_are_read_as_utc(tmp_path):
    ss = _store(tmp_path / "st")
    seg = json.loads((tmp_path / "st" / "manifest.json").read_text())["segments"][0]
    for name, cols in ((seg["events_file"], ["timestamp"]), (seg["sessions_file"],
                                                            ["start", "end"])):
        p = tmp_path / "st" / name
        pl.read_parquet(p).with_columns(pl.col(c).dt.replace_time_zone(None)
                                        for c in cols).write_parquet(p)
    st = open_store(tmp_path / "st")
    got = st.get_many([s.session_id for s in ss])
    assert got == ss
    assert st.last_event() == max(s.end for s in ss)


# ---- 30.1 through an index folder: `profile` must not read another index's events ----------
def test_profile_refuses_segment_paths_into_another_index(embed_home, tmp_path, capsys,
                                                         monkeypatch):
    from behavior_rag import BehaviorRAG
    from behavior_rag.settings import Settings

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    ss = generate(8, seed=31).sessions
    for name, part in (("a", ss[:4]), ("b", ss[4:])):
        rag = BehaviorRAG(s, tmp_path / name)
        rag.index_sessions(part)
        rag.save()
    cfg_path = tmp_path / "a" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    theirs = json.loads((tmp_path / "b" / "config.json").read_text())
    seg, other = cfg["stores"]["sessions"]["segments"][0], \
        theirs["stores"]["sessions"]["segments"][0]
    seg.update(sessions_file="../../b/sessions/" + other["sessions_file"],
               events_file=str(tmp_path / "b" / "sessions" / other["events_file"]))
    cfg_path.write_text(json.dumps(cfg))
    monkeypatch.setenv("BEHAVIOR_RAG_HOME", str(embed_home))
    monkeypatch.setenv("BEHAVIOR_RAG_EMBED__BACKEND", "onnx-int8")
    monkeypatch.setenv("BEHAVIOR_RAG_LLM__BACKEND", "none")
    monkeypatch.setattr(sys, "argv", ["behavior-rag", "profile", ss[5].user_id, "--index",
                                      str(tmp_path / "a")])
    with pytest.raises(SystemExit) as ex:
        main()
    out, err = capsys.readouterr()
    assert ex.value.code == 2 and "Traceback" not in err and ss[5].session_id not in out
    e = json.loads(err.strip().splitlines()[-1])
    assert e["error"] == "StoreError" and "not a file name inside the store" in e["message"]
