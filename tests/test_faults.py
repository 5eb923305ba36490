"""Fault injection: SIGKILL at every planted point of a commit, concurrent writers, and a
bounded soak against ``behavior-rag serve`` with a SIGKILL + restart in the middle. Nothing
acknowledged is lost; every failure is a clear error; the folder always loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from behavior_rag import BehaviorRAG
from behavior_rag.faults import ENV, POINTS
from behavior_rag.ingest.store import write_store
from behavior_rag.settings import Settings
from behavior_rag.synth import generate

ROOT = Path(__file__).resolve().parents[1]
ENV_EMBED = {"BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8", "BEHAVIOR_RAG_LLM__BACKEND": "none"}


def _s(home) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})


@pytest.fixture(scope="module")
def base(embed_home, tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "ix"
    rag = BehaviorRAG(_s(embed_home), path)
    rag.index_sessions(generate(30, seed=91).sessions)
    rag.save()
    return path


def _consistent(home, path) -> int:
    rag = BehaviorRAG(_s(home), path)
    ids = rag.index.metadata()["session_id"].to_list()
    assert len(rag.sessions) == len(ids)
    assert len(rag.sessions.get_many(ids)) == len(ids)  # every vector has its events
    return len(ids)


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_commit_step_leaves_one_whole_commit(base, tmp_path, embed_home, point):
    path = tmp_path / "ix"
    shutil.copytree(base, path)
    child = textwrap.dedent("""
        import sys
        from behavior_rag import BehaviorRAG
        from behavior_rag.settings import Settings
        from behavior_rag.synth import generate
        s = Settings(home=sys.argv[2], embed={"backend": "onnx-int8"}, llm={"backend": "none"})
        rag = BehaviorRAG(s, sys.argv[1])
        rag.index_sessions(generate(10, seed=92, prefix="new").sessions)
        rag.delete_sessions(rag.sessions.ids()[:3])
        rag.save()
        print("SAVED")
    """)
    p = subprocess.run([sys.executable, "-c", child, str(path), str(embed_home)],
                       capture_output=True, text=True, env=os.environ | {ENV: point},
                       timeout=300)
    assert p.returncode == -9 and "SAVED" not in p.stdout, p.stderr[-2000:]
    n = _consistent(embed_home, path)
    assert n == (37 if point == "committed" else 30)  # the old commit, or the new one whole
    rag = BehaviorRAG(_s(embed_home), path)  # the next writer works and sweeps the leftovers
    rag.index_sessions(generate(2, seed=93, prefix="after").sessions)
    cfg = rag.save()
    assert [d.name for d in path.iterdir() if d.name.startswith(("v-", ".v"))] == [cfg.data]
    listed = {f for g in cfg.stores["sessions"].segments for f in (g.sessions_file,
                                                                   g.events_file)}
    tomb = cfg.stores["sessions"].tombstones
    assert {f.name for f in (path / "sessions").iterdir()} == listed | ({tomb} if tomb else set())
    assert _consistent(embed_home, path) == n + 2


def test_concurrent_cli_writers_all_land(base, tmp_path, embed_home):
    path = tmp_path / "ix"
    shutil.copytree(base, path)
    for i in range(4):
        write_store(generate(8, seed=100 + i, prefix=f"w{i}").sessions, tmp_path / f"s{i}")
    env = os.environ | ENV_EMBED | {"BEHAVIOR_RAG_HOME": str(embed_home),
                                    "BEHAVIOR_RAG_INDEX__LOCK_TIMEOUT_S": "240"}
    procs = [subprocess.Popen([sys.executable, "-m", "behavior_rag.cli", "index", "add",
                               str(tmp_path / f"s{i}"), "--index", str(path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    assert _consistent(embed_home, path) == 30 + 4 * 8  # no writer's sessions were lost


def test_bounded_soak_with_a_restart_loses_nothing_acknowledged(tmp_path, embed_home):
    out = tmp_path / "soak.json"
    p = subprocess.run([sys.executable, str(ROOT / "eval" / "soak.py"), "--requests", "80",
                        "--clients", "3", "--max-seconds", "240", "--out",
                        str(tmp_path / "soak.md"), "--json", str(out)],
                       capture_output=True, text=True, timeout=600,
                       env=os.environ | ENV_EMBED | {"BEHAVIOR_RAG_HOME": str(embed_home)})
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["acked_upserts"] > 0 and r["requests"] == 80
    assert r["found_in_index"] == r["found_in_store"] == r["expected_present"]
    assert r["deleted_but_present"] == 0
    # while down or loading: refused connections and 503s; never a 500
    assert set(r["status"]) <= {"200", "503", "ServiceUnavailable"}, r["status"]
