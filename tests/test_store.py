"""The session store round-trips exactly and replaces atomically."""

from __future__ import annotations

import json

import pytest

from behavior_rag.errors import StoreError
from behavior_rag.ingest.store import read_manifest, read_store, write_store


def test_round_trip_is_exact(tmp_path, taobao):
    some = taobao.sessions[:300]
    m = write_store(some, tmp_path / "s")
    assert (m.sessions, m.events) == (300, sum(s.n_events for s in some))
    back = read_store(tmp_path / "s")
    assert [s.model_dump() for s in back] == [s.model_dump() for s in some]


def test_uci_aggregates_and_labels_round_trip(tmp_path):
    from behavior_rag.ingest.uci import load_uci
    from tests.conftest import UCI, need

    sessions = load_uci(need(UCI)).sessions[:50]
    write_store(sessions, tmp_path / "u")
    assert [s.model_dump() for s in read_store(tmp_path / "u")] == [s.model_dump()
                                                                     for s in sessions]
    assert read_manifest(tmp_path / "u").labels == {
        k: sum(s.label == k for s in sessions) for k in {s.label for s in sessions}}


def test_rewrite_replaces_and_leaves_no_temp_folders(tmp_path, taobao):
    write_store(taobao.sessions[:10], tmp_path / "s")
    write_store(taobao.sessions[10:15], tmp_path / "s")
    assert len(read_store(tmp_path / "s")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_refuses_to_replace_a_folder_that_is_not_a_store(tmp_path, taobao):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError):
        write_store(taobao.sessions[:3], tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_unknown_version_and_missing_store_are_clear_errors(tmp_path, taobao):
    with pytest.raises(StoreError, match="not a session store"):
        read_store(tmp_path / "nothing")
    write_store(taobao.sessions[:3], tmp_path / "s")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["format_version"] = 99
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="format 99"):
        read_store(tmp_path / "s")


# ---- the segmented store: incremental writes, compaction, lookups, crash safety -------------
def _files(path):
    return {p.name: (p.stat().st_ino, p.stat().st_size) for p in path.iterdir()}


def _by_id(sessions):
    return {s.session_id: s.model_dump() for s in sessions}


def test_upsert_and_delete_leave_untouched_segments_as_they_are(tmp_path, taobao):
    from behavior_rag.ingest.store import open_store

    base = taobao.sessions[:200]
    write_store(base, tmp_path / "s")
    before = _files(tmp_path / "s")
    st = open_store(tmp_path / "s")
    changed = [s.model_copy(update={"label": "x"}) for s in base[:5]]
    new = taobao.sessions[200:210]
    st.upsert(changed + new)
    assert st.delete([base[7].session_id, base[8].session_id, "no-such-id"]) == 2
    m = st.commit()
    after = _files(tmp_path / "s")
    segs = [n for n in before if n.startswith("seg-")]
    assert segs and all(after[n] == before[n] for n in segs)  # same inode, same size
    assert len([n for n in after if n.startswith("seg-")]) == 2 * len(m.segments) == 4
    assert m.tombstones in after and m.sessions == 200 + 10 - 2
    want = _by_id(base) | _by_id(changed + new)
    for sid in (base[7].session_id, base[8].session_id):
        del want[sid]
    assert _by_id(read_store(tmp_path / "s")) == want


def test_compaction_keeps_every_live_session(tmp_path, taobao):
    from behavior_rag.ingest import compaction
    from behavior_rag.ingest import store as store_mod

    write_store(taobao.sessions[:100], tmp_path / "s")
    st = store_mod.open_store(tmp_path / "s")
    want = _by_id(taobao.sessions[:100])
    for i in range(compaction.MAX_SEGMENTS + 2):  # one segment per commit, until compaction
        more = taobao.sessions[100 + 3 * i:103 + 3 * i]
        st.upsert(more)
        st.delete([taobao.sessions[i].session_id])
        want |= _by_id(more)
        want.pop(taobao.sessions[i].session_id)
        m = st.commit()
        assert _by_id(store_mod.open_store(tmp_path / "s").values()) == want
    assert len(m.segments) < compaction.MAX_SEGMENTS  # it compacted on the way
    names = {p.name for p in (tmp_path / "s").iterdir()}
    listed = {f for g in m.segments for f in (g.sessions_file, g.events_file)}
    assert names == listed | {"manifest.json"} | ({m.tombstones} if m.tombstones else set())


def test_compaction_merges_small_segments_and_leaves_full_ones_alone(tmp_path, taobao,
                                                                     monkeypatch):
    from behavior_rag.ingest import compaction
    from behavior_rag.ingest.store import open_store

    monkeypatch.setattr(compaction, "FULL_SEGMENT", 50)
    monkeypatch.setattr(compaction, "MAX_SEGMENTS", 3)
    write_store(taobao.sessions[:80], tmp_path / "s")  # one full segment
    full = _files(tmp_path / "s")
    st = open_store(tmp_path / "s")
    want = _by_id(taobao.sessions[:80])
    for i in range(4):  # small segments of 10, until more than 3 are small
        more = taobao.sessions[80 + 10 * i:90 + 10 * i]
        st.upsert(more)
        want |= _by_id(more)
        m = st.commit()
    sizes = sorted(g.sessions for g in m.segments)
    assert sizes == [40, 80]  # the 4 small ones merged into one; the full one as it was
    after = _files(tmp_path / "s")
    assert all(after[n] == full[n] for n in full if n.startswith("seg-"))  # same inode
    assert _by_id(open_store(tmp_path / "s").values()) == want
    got = open_store(tmp_path / "s")
    assert [s.session_id for s in got.get_many([taobao.sessions[95].session_id])] == [
        taobao.sessions[95].session_id]


def test_a_mostly_dead_segment_is_rewritten_alone(tmp_path, taobao, monkeypatch):
    from behavior_rag.ingest import compaction
    from behavior_rag.ingest.store import open_store

    monkeypatch.setattr(compaction, "FULL_SEGMENT", 50)
    write_store(taobao.sessions[:60], tmp_path / "s")
    st = open_store(tmp_path / "s")
    st.upsert(taobao.sessions[60:120])  # a second full segment
    st.commit()
    before = _files(tmp_path / "s")
    gone = [s.session_id for s in taobao.sessions[:20]]  # a third of the first segment
    st.delete(gone)
    m = st.commit()
    assert sorted(g.sessions for g in m.segments) == [40, 60] and m.tombstones is None
    after = _files(tmp_path / "s")
    kept = [n for n in before if n.startswith("seg-") and n in after]
    assert len(kept) == 2 and all(after[n] == before[n] for n in kept)  # the other segment
    want = {k: v for k, v in _by_id(taobao.sessions[:120]).items() if k not in set(gone)}
    assert _by_id(open_store(tmp_path / "s").values()) == want


def test_lookups_by_session_and_user_match_a_full_scan(tmp_path, taobao):
    from behavior_rag.ingest.store import open_store

    write_store(taobao.sessions[:300], tmp_path / "s")
    st = open_store(tmp_path / "s")
    st.upsert(taobao.sessions[300:320])  # pending rows are seen too
    every = list(st.values())
    ids = [every[i].session_id for i in (0, 17, 150, 305, 299)]
    assert [s.model_dump() for s in st.get_many(ids)] == [
        next(x for x in every if x.session_id == i).model_dump() for i in ids]
    for user in {every[i].user_id for i in (0, 40, 310)}:
        full = sorted((s for s in every if s.user_id == user),
                      key=lambda s: (s.start, s.session_id))
        assert [s.model_dump() for s in st.of_user(user)] == [s.model_dump() for s in full]
        assert st.has_user(user)
    assert st.get("nope") is None and not st.has_user("nobody")
    assert st.last_event() == max(s.end for s in every if s.events)


def test_crash_between_segment_write_and_commit_keeps_the_previous_state(tmp_path, taobao):
    import subprocess
    import sys
    import textwrap

    from behavior_rag.ingest.store import open_store

    write_store(taobao.sessions[:50], tmp_path / "s")
    child = textwrap.dedent("""
        import os, signal, sys
        from behavior_rag.ingest.store import open_store, read_store
        st = open_store(sys.argv[1])
        extra = [s.model_copy(update={"session_id": s.session_id + "-new"})
                 for s in read_store(sys.argv[1])[:20]]
        st.upsert(extra)
        st.delete(st.ids()[:5])
        st.prepare()  # segment and tombstones written and fsynced, manifest not yet replaced
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path / "s")])
    assert proc.returncode == -9
    assert any(p.name.startswith("tomb-") for p in (tmp_path / "s").iterdir())  # it got there
    assert _by_id(read_store(tmp_path / "s")) == _by_id(taobao.sessions[:50])
    st = open_store(tmp_path / "s")
    st.upsert(taobao.sessions[50:51])
    m = st.commit()  # the next commit sweeps what the killed one left
    listed = {f for g in m.segments for f in (g.sessions_file, g.events_file)}
    assert {p.name for p in (tmp_path / "s").iterdir()} == listed | {"manifest.json"}


def test_a_format_1_store_reads_and_migrates_on_commit(tmp_path, taobao):
    import polars as pl

    from behavior_rag.ingest.store import open_store

    write_store(taobao.sessions[:30], tmp_path / "new")
    st = open_store(tmp_path / "new")
    seg = st.manifest.segments[0]
    old = tmp_path / "old"
    old.mkdir()
    ev = pl.read_parquet(tmp_path / "new" / seg.events_file).sort("session_id")  # v1 order
    ev.write_parquet(old / "events.parquet")
    pl.read_parquet(tmp_path / "new" / seg.sessions_file).drop(
        "start", "end", "ev_offset").write_parquet(old / "sessions.parquet")
    m = json.loads((tmp_path / "new" / "manifest.json").read_text())
    m = {k: m[k] for k in ("sessions", "events", "users", "labels", "created", "info")}
    (old / "manifest.json").write_text(json.dumps({**m, "format_version": 1}))
    assert _by_id(read_store(old)) == _by_id(taobao.sessions[:30])
    legacy = open_store(old)
    legacy.upsert(taobao.sessions[30:31])
    legacy.commit()
    assert not (old / "events.parquet").exists() and read_manifest(old).format_version == 2
    assert _by_id(read_store(old)) == _by_id(taobao.sessions[:31])


def test_index_folder_commits_vectors_and_events_together(tmp_path, embed_home, taobao):
    """BehaviorRAG.save appends a segment (the first one stays as it was), and a crash after
    the new segment is written but before config.json points at it leaves both halves of the
    index at the previous commit."""
    import subprocess
    import sys
    import textwrap

    from behavior_rag import BehaviorRAG
    from behavior_rag.index.storage import read_config
    from behavior_rag.settings import Settings

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.index_sessions(taobao.sessions[:60])
    rag.save()
    first = _files(tmp_path / "ix" / "sessions")
    rag.index_sessions(taobao.sessions[60:70])
    rag.delete_sessions([taobao.sessions[0].session_id])
    cfg = rag.save()
    now = _files(tmp_path / "ix" / "sessions")
    assert all(now[n] == first[n] for n in first)  # nothing rewritten
    assert cfg.stores["sessions"].sessions == cfg.count == 69
    again = BehaviorRAG(s, tmp_path / "ix")
    assert len(again.sessions) == len(again.index) == 69
    assert again.sessions.get(taobao.sessions[65].session_id) == taobao.sessions[65]

    child = textwrap.dedent("""
        import os, signal, sys
        from behavior_rag import BehaviorRAG
        from behavior_rag.ingest.store import read_store
        from behavior_rag.settings import Settings
        s = Settings(home=sys.argv[2], embed={"backend": "onnx-int8"}, llm={"backend": "none"})
        rag = BehaviorRAG(s, sys.argv[1])
        rag.delete_sessions(rag.sessions.ids()[:30])
        rag.sessions.prepare()  # the store's half of the next commit is on disk ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... the index's config.json is not
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path / "ix"), str(embed_home)])
    assert proc.returncode == -9
    after = BehaviorRAG(s, tmp_path / "ix")
    assert read_config(tmp_path / "ix").count == len(after.index) == len(after.sessions) == 69
    user = taobao.sessions[65].user_id
    assert after.profile(user).facts["n_sessions"].value == sum(
        x.user_id == user for x in taobao.sessions[1:70])
