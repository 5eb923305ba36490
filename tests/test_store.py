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
