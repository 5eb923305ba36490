"""Bounded soak: mixed reads and writes against ``behavior-rag serve`` on loopback, with the
server SIGKILLed and restarted halfway; then every acknowledged write is looked for.

Workload (``--requests`` in all, ``--clients`` threads, our ``Client`` without retries so every
error is counted): similar by session id 40 %, classify 20 %, profile 15 %, upsert of 2 new
sessions 20 %, delete of one acknowledged upsert 5 %. A write counts as acknowledged when the
service answered 200. After the run the folder is opened in-process: every acknowledged upsert
must be there (unless its delete was acknowledged too) and every acknowledged delete gone.

Usage: python eval/soak.py [--requests 1000] [--clients 4] [--max-seconds 600]
                           [--out eval/reports/soak.md] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from behavior_rag import BehaviorRAG, Client, Settings  # noqa: E402
from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.errors import BehaviorRagError  # noqa: E402
from behavior_rag.synth import generate  # noqa: E402

KINDS = [("similar", 40), ("classify", 20), ("profile", 15), ("upsert", 20), ("delete", 5)]


class Server:
    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.hwm_mb = 0.0

    def start(self) -> float:
        t = time.perf_counter()
        # requests queue for a model slot (up to 10 s) rather than get fast 503s: the soak is
        # about what survives a crash, not the overload policy (bench_service measures that)
        env = os.environ | {"BEHAVIOR_RAG_SERVE__API_KEY": self.key,
                            "BEHAVIOR_RAG_SERVE__ACQUIRE_TIMEOUT_S": "10"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "behavior_rag.cli", "serve", "--index", str(self.path),
             "--port", str(self.port), "--llm", "none", "--log-level", "warning"], env=env,
            stdout=subprocess.DEVNULL)
        with Client(self.url, api_key=self.key, max_retries=0) as c:
            while True:
                try:
                    c.ready()
                    return time.perf_counter() - t
                except BehaviorRagError:
                    if self.proc.poll() is not None or time.perf_counter() - t > 300:
                        raise SystemExit("the service did not start") from None
                    time.sleep(0.2)

    def rss(self) -> None:
        try:
            st = Path(f"/proc/{self.proc.pid}/status").read_text()
            kb = next(int(ln.split()[1]) for ln in st.splitlines() if ln.startswith("VmHWM"))
            self.hwm_mb = max(self.hwm_mb, kb / 1024)
        except (OSError, StopIteration, AttributeError):
            pass

    def kill(self) -> None:
        self.rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        self.rss()
        self.proc.terminate()
        self.proc.wait(30)


def build(path: Path) -> tuple[list, list]:
    data = generate(300, seed=81).sessions
    rag = BehaviorRAG(Settings(llm={"backend": "none"}), path, fresh=True)
    rag.add_labelled(data[:200])
    rag.save()
    return data[:200], data[200:]


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    path = work / "ix"
    known, queries = build(path)
    key = secrets.token_hex(16)
    server = Server(path, key)
    ready = [server.start()]
    rng = random.Random(0)
    plan = [k for k, w in KINDS for _ in range(w)]
    todo = [rng.choice(plan) for _ in range(args.requests)]
    fresh = iter(generate(args.requests * 2 + 10, seed=82, prefix="soak").sessions)
    lock = threading.Lock()
    acked_up: set[str] = set()
    acked_del: set[str] = set()
    status: Counter = Counter()
    lat: dict[str, list[float]] = {k: [] for k, _ in KINDS}
    state = {"next": 0, "restarted": False, "down": threading.Event()}
    t_end = time.monotonic() + args.max_seconds

    def one(c: Client, kind: str) -> None:
        with lock:
            batch = [next(fresh), next(fresh)] if kind == "upsert" else None
            victim = rng.choice(sorted(acked_up - acked_del)) if kind == "delete" and \
                acked_up - acked_del else None
        if kind == "delete" and victim is None:  # nothing acknowledged to delete yet
            kind = "similar"
        q = rng.choice(queries)
        t = time.perf_counter()
        try:
            if kind == "similar":
                c.similar(session_id=rng.choice(known).session_id, k=10)
            elif kind == "classify":
                c.classify(q)
            elif kind == "profile":
                c.profile(rng.choice(known).user_id)
            elif kind == "upsert":
                c.index_sessions(batch)
                with lock:
                    acked_up.update(s.session_id for s in batch)
            else:
                c.delete_sessions([victim])
                with lock:
                    acked_del.add(victim)
            code = "200"
        except BehaviorRagError as e:
            code = str(getattr(e, "status_code", None) or type(e).__name__)
            if code in ("ServiceUnavailable", "503"):
                time.sleep(0.25)  # down (restarting): back off as a real client would
        with lock:
            status[code] += 1
            if code == "200":
                lat[kind].append(time.perf_counter() - t)

    def worker() -> None:
        with Client(server.url, api_key=key, max_retries=0, timeout=120) as c:
            while time.monotonic() < t_end:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                if i >= len(todo):
                    return
                if i == len(todo) // 2 and not state["restarted"]:
                    state["restarted"] = True
                    server.kill()  # mid-run, with other clients' requests in flight
                    ready.append(server.start())
                one(c, todo[i])
                if i % 25 == 0:
                    server.rss()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t0
    server.stop()
    after = BehaviorRAG(Settings(llm={"backend": "none"}), path)
    live = set(after.index.metadata()["session_id"].to_list())
    want = acked_up - acked_del
    found = want & live
    stored = {s.session_id for s in after.sessions.get_many(sorted(want))}
    return {"requests": sum(status.values()), "planned": len(todo), "clients": args.clients,
            "seconds": seconds, "status": dict(status), "acked_upserts": len(acked_up),
            "acked_deletes": len(acked_del), "expected_present": len(want),
            "found_in_index": len(found), "found_in_store": len(want & stored),
            "deleted_but_present": len(acked_del & live), "ready_s": ready,
            "server_hwm_mb": server.hwm_mb,
            "latency_ms": {k: {"n": len(v), "p50": float(np.percentile(v, 50) * 1e3),
                               "p99": float(np.percentile(v, 99) * 1e3)}
                           for k, v in lat.items() if v}}


def report(r: dict, args) -> str:
    ok = r["found_in_index"] == r["found_in_store"] == r["expected_present"] \
        and not r["deleted_but_present"]
    rows = "\n".join(f"| {k} | {v['n']} | {v['p50']:.1f} | {v['p99']:.1f} |"
                     for k, v in r["latency_ms"].items())
    return "\n".join([
        "# Soak: mixed reads and writes, server SIGKILLed and restarted halfway", "",
        f"Command: `python eval/soak.py --requests {args.requests} --clients {args.clients}`; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores (shared "
        "box). Loopback, `behavior-rag serve --llm none` over a 200-session labelled "
        "synthetic index; requests wait up to 10 s for a model slot; clients without "
        "retries, so every error is counted.", "",
        f"- requests sent: {r['requests']} of {r['planned']} planned, in {r['seconds']:.0f} s "
        f"by {r['clients']} clients",
        f"- answers by status: {json.dumps(r['status'], sort_keys=True)} (non-200 answers "
        "and refused connections are while the server was down or restarting)",
        f"- acknowledged writes: {r['acked_upserts']} sessions upserted, {r['acked_deletes']} "
        "deleted",
        f"- after the restart and the run: {r['found_in_index']} of {r['expected_present']} "
        f"expected sessions in the index, {r['found_in_store']} with their events in the "
        f"session store; {r['deleted_but_present']} acknowledged deletes still present "
        f"-> {'nothing acknowledged was lost' if ok else 'ACKNOWLEDGED WRITES WERE LOST'}",
        f"- server peak RSS (VmHWM, both runs): {r['server_hwm_mb']:.0f} MB; ready in "
        + " / ".join(f"{x:.1f}" for x in r["ready_s"]) + " s (start, restart)", "",
        "| request | answered 200 | p50 ms | p99 ms |", "|---|---|---|---|", rows, ""])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--out", default="eval/reports/soak.md")
    ap.add_argument("--json")
    args = ap.parse_args()
    r = run(args)
    if args.json:
        replace_file(args.json, json.dumps(r, indent=1))
    text = report(r, args)
    replace_file(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
