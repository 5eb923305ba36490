"""One writer per index folder: a second writer waits, then is told who holds it; a writer
whose index went stale is refused; a served folder refuses other writers. Nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from behavior_rag import BehaviorRAG
from behavior_rag.errors import WriteConflict
from behavior_rag.ingest.store import write_store
from behavior_rag.settings import Settings
from behavior_rag.synth import generate


def _s(home) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                          text=True, env=os.environ | env, timeout=600)


def test_a_second_writer_waits_then_is_told_and_nothing_is_lost(tmp_path, embed_home):
    a = generate(40, seed=41, prefix="a").sessions
    b = generate(30, seed=42, prefix="b").sessions
    write_store(b, tmp_path / "b")
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
           "BEHAVIOR_RAG_INDEX__LOCK_TIMEOUT_S": "0.5"}
    rag = BehaviorRAG(_s(embed_home), tmp_path / "ix")
    rag.index_sessions(a)  # holds the folder from this change until save()
    p = _cli(env, "index", "add", str(tmp_path / "b"), "--index", str(tmp_path / "ix"))
    assert p.returncode == 2, p.stderr[-2000:]
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert err["error"] == "WriteConflict" and "another writer" in err["message"]
    assert f"pid {os.getpid()}" in err["message"]
    rag.save()
    p = _cli(env, "index", "add", str(tmp_path / "b"), "--index", str(tmp_path / "ix"))
    assert p.returncode == 0, p.stderr[-2000:]
    after = BehaviorRAG(_s(embed_home), tmp_path / "ix")
    assert len(after.index) == len(after.sessions) == 70  # both writers' sessions are there


def test_a_writer_whose_index_went_stale_is_refused(tmp_path, embed_home):
    first = BehaviorRAG(_s(embed_home), tmp_path / "ix")
    first.index_sessions(generate(20, seed=43, prefix="c").sessions)
    first.save()
    reader = BehaviorRAG(_s(embed_home), tmp_path / "ix")
    assert len(reader.index) == 20  # loaded at this commit
    other = BehaviorRAG(_s(embed_home), tmp_path / "ix")
    other.index_sessions(generate(10, seed=44, prefix="d").sessions)
    other.save()
    with pytest.raises(WriteConflict, match="changed since it was opened"):
        reader.index_sessions(generate(5, seed=45, prefix="e").sessions)
    assert len(BehaviorRAG(_s(embed_home), tmp_path / "ix").index) == 30  # nothing lost


def test_a_served_folder_refuses_other_writers(tmp_path, embed_home):
    from behavior_rag.client import Client
    from behavior_rag.service.run import serve_in_background

    s = _s(embed_home).model_copy(update={"serve": Settings().serve.model_copy(update={
        "api_key": "k" * 32})})
    builder = BehaviorRAG(s, tmp_path / "ix")
    builder.index_sessions(generate(20, seed=46, prefix="f").sessions)
    builder.save()
    with serve_in_background(BehaviorRAG(s, tmp_path / "ix"), s.serve) as url:
        outside = BehaviorRAG(s, tmp_path / "ix")
        with pytest.raises(WriteConflict, match="served by `behavior-rag serve`"):
            outside.index_sessions(generate(5, seed=47, prefix="g").sessions)
        with Client(url, api_key="k" * 32) as c:  # the service's own writes go through
            assert c.index_sessions(generate(5, seed=48, prefix="h").sessions).index_size == 25
    outside = BehaviorRAG(s, tmp_path / "ix")  # stopped: the folder is free again
    outside.index_sessions(generate(5, seed=49, prefix="i").sessions)
    assert outside.save().count == 30
