"""Live sessions survive a SIGKILL: every acknowledged event is there after a restart.

The server is ``behavior-rag serve`` in its own process (as a user runs it), killed with
SIGKILL while clients append; then restarted on the same folder. Also: the write-ahead log
drops only a torn last write, and the per-event visibility agrees with the model's input cut.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from behavior_rag import BehaviorRAG, Client
from behavior_rag.errors import BehaviorRagError, StoreError
from behavior_rag.labels.targets import InputCut
from behavior_rag.live.visibility import Visibility
from behavior_rag.live.wal import WriteAheadLog
from behavior_rag.synth import generate
from tests.test_live import KEY, fitted_ix, live_settings  # noqa: F401 - the fixture

ENV = {"BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8", "BEHAVIOR_RAG_LLM__BACKEND": "none",
       "BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY": "live-test",
       "BEHAVIOR_RAG_CLASSIFY__TAXONOMY": "purchase_intent",
       "BEHAVIOR_RAG_SERVE__API_KEY": KEY, "BEHAVIOR_RAG_LIVE__COMMIT_EVERY_S": "3600"}


class Server:
    """``behavior-rag serve`` on a free port, started and killed like a user's."""

    def __init__(self, path, home) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.path, self.home = path, home
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = os.environ | ENV | {"BEHAVIOR_RAG_HOME": str(self.home)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "behavior_rag.cli", "serve", "--index", str(self.path),
             "--port", str(self.port), "--log-level", "warning"], env=env,
            stdout=subprocess.DEVNULL)
        with Client(self.url, api_key=KEY, max_retries=0) as c:
            deadline = time.monotonic() + 120
            while True:
                try:
                    c.live_list()
                    return
                except BehaviorRagError:
                    assert self.proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal


def _append_until_killed(url, sessions, acked, stop) -> None:
    with Client(url, api_key=KEY, max_retries=0, timeout=5) as c:
        for s in sessions:
            for e in s.events:
                if stop.is_set():
                    return
                try:
                    c.live_append(s.session_id, [e])
                except BehaviorRagError:
                    return  # the server is gone
                acked.setdefault(s.session_id, []).append(e)


def test_sigkill_loses_no_acknowledged_event(fitted_ix, tmp_path, embed_home):  # noqa: F811
    path = tmp_path / "ix"
    shutil.copytree(fitted_ix, path)
    server = Server(path, embed_home)
    server.start()
    shoppers = [s for s in generate(40, seed=5).sessions if s.n_events >= 3]
    ended = shoppers.pop()
    with Client(server.url, api_key=KEY) as c:
        c.live_append(ended.session_id, ended.events)
        c.live_end(ended.session_id)  # ended, waiting for a commit (due in an hour)
    acked: dict[str, list] = {}
    stop = threading.Event()
    workers = [threading.Thread(target=_append_until_killed,
                                args=(server.url, shoppers[i::4], acked, stop))
               for i in range(4)]
    for w in workers:
        w.start()
    while sum(map(len, acked.values())) < 60:
        time.sleep(0.01)
    server.kill()  # appends in flight
    stop.set()
    for w in workers:
        w.join()
    server.start()
    with Client(server.url, api_key=KEY) as c:
        for sid, events in acked.items():
            assert c.live_get(sid).events >= len(events)
            c.live_end(sid)
        # a session whose first append was written but not yet answered at the kill is open
        # again too (the log keeps what it wrote): end those as well
        for v in c.live_list(limit=1000).sessions:
            c.live_end(v.session_id)
    server.stop()  # a clean stop commits what ended
    stored = BehaviorRAG(live_settings(embed_home), path).sessions
    got = stored.get(ended.session_id)
    assert got is not None and got.n_events == ended.n_events
    for sid, events in acked.items():
        kept = {(e.timestamp, e.type, e.item_id) for e in stored.get(sid).events}
        assert {(e.timestamp, e.type, e.item_id) for e in events} <= kept, sid
    assert not (path / "live" / "wal.log").read_bytes()  # nothing left open or waiting


def test_the_log_drops_only_a_torn_last_write(tmp_path):
    wal = WriteAheadLog(tmp_path / "wal.log")
    wal.append([{"op": "add", "sid": "a", "ev": []}, {"op": "end", "sid": "a"}])
    wal.close()
    whole = (tmp_path / "wal.log").read_bytes()
    (tmp_path / "wal.log").write_bytes(whole + whole[:20])  # a write cut short
    assert [r["op"] for r in wal.read()] == ["add", "end"] and wal.torn == 1
    (tmp_path / "wal.log").write_bytes(whole[:5] + b"X" + whole[6:])  # damage, then a record
    with pytest.raises(StoreError) as e:
        wal.read()
    assert e.value.row == 1


@pytest.mark.parametrize("spec", ["all", "before:cart,purchase", "first:3", "minutes:2",
                                  "types:view,search"])
def test_per_event_visibility_agrees_with_the_input_cut(spec):
    cut = InputCut.parse(spec)
    for s in generate(40, seed=8).sessions:
        v = Visibility(cut)
        seen = [i for i, e in enumerate(s.events) if v.add(e)]
        assert seen == cut.keep(s) and v.visible == len(seen), (spec, s.session_id)


def test_concurrent_appends_share_fsyncs_and_all_land(tmp_path):
    wal = WriteAheadLog(tmp_path / "wal.log", fsync=True)

    def writer(k: int) -> None:
        for i in range(50):
            wal.sync(wal.append([{"op": "end", "sid": f"{k}-{i}"}]))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["sid"] for r in wal.read()) == sorted(f"{k}-{i}" for k in range(4)
                                                         for i in range(50))
