"""``behavior-rag live``: a log replayed through a running service, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from behavior_rag import BehaviorRAG, Client
from behavior_rag.ingest.store import write_store
from behavior_rag.live.replay import replay
from behavior_rag.service.run import serve_in_background
from behavior_rag.synth import generate
from behavior_rag.types import Session
from tests.test_live import KEY, fitted_ix, live_settings, wait_live  # noqa: F401


def test_the_live_command_streams_a_log_and_ends_its_sessions(fitted_ix, tmp_path,  # noqa: F811
                                                              embed_home):
    import json

    log = [s.model_copy(update={"session_id": "log-" + s.session_id})
           for s in generate(12, seed=61).sessions if s.events][:6]
    write_store(log, tmp_path / "log")
    path = tmp_path / "ix"
    shutil.copytree(fitted_ix, path)
    s = live_settings(embed_home, commit_every_s=0.1)
    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:
        with Client(url, api_key=KEY) as c:
            wait_live(c)
        env = os.environ | {"BEHAVIOR_RAG_SERVE__API_KEY": KEY,
                            "BEHAVIOR_RAG_HOME": str(embed_home)}
        p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", "live",
                            str(tmp_path / "log"), "--url", url, "--speed", "0"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        summary, moved = lines[-1], lines[:-1]
        assert summary["events"] == sum(x.n_events for x in log)
        assert summary["sessions"] == summary["ended"] == len(log)
        assert moved and all(m["label"] in ("will_buy", "no_purchase") for m in moved)
        assert {m["session_id"] for m in moved} <= {x.session_id for x in log}
        with Client(url, api_key=KEY) as c:
            deadline = time.monotonic() + 10
            while c.live_list().pending_commit:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    stored = BehaviorRAG(s, path).sessions
    assert all(stored.get(x.session_id).n_events == x.n_events for x in log)


def test_a_replay_keeps_to_the_logs_clock_at_the_given_speed(fitted_ix, tmp_path,  # noqa: F811
                                                             embed_home):
    base = generate(1, seed=3).sessions[0].events[0]
    t0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    sessions = [Session(session_id=f"r{k}", user_id=f"shopper-{k}", events=[
        base.model_copy(update={"user_id": f"shopper-{k}", "timestamp": t0 + timedelta(
            seconds=2 * i + k)}) for i in range(3)]) for k in range(2)]  # 5 s of log time
    path = tmp_path / "ix"
    shutil.copytree(fitted_ix, path)
    s = live_settings(embed_home)
    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:
        with Client(url, api_key=KEY) as c:
            wait_live(c)
            report = replay(c, sessions, speed=4.0, end=False)
            assert {v.session_id for v in c.live_list().sessions} == {"r0", "r1"}
    assert report.events == 6 and 5 / 4 <= report.seconds < 5 / 4 + 2
