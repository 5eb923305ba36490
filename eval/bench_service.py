"""HTTP service benchmark: p50/p99 latency and throughput of ``/v1/similar`` and ``/v1/classify``
at 1, 8 and 32 concurrent clients, on loopback.

The service runs as ``behavior-rag serve`` in its own process (a server thread inside the load
generator's process would share its GIL and measure the client as much as the server); clients
are our ``AsyncClient`` without retries, so every overload answer (503) is counted, not hidden.
Each level is bounded by a request count and a time limit.

Data: a SYNTHETIC labelled index (``behavior_rag.synth``); queries are sessions of held-out
synthetic shoppers. Classification is kNN-only unless ``--heads`` fits a model first (e.g.
``--heads "facts;facts,embed,knn"``: a facts-only model, then one that reads vectors) or
``--llm`` says otherwise.

Usage:  python eval/bench_service.py [--requests 200] [--max-seconds 30] [--concurrency 1,8,32]
        [--sessions 1000] [--max-concurrency 2] [--acquire-timeout 10] [--llm none]
        [--out eval/reports/bench_service.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from behavior_rag import AsyncClient, BehaviorRAG, Client, Settings  # noqa: E402
from behavior_rag.errors import BehaviorRagError  # noqa: E402
from behavior_rag.synth import generate  # noqa: E402


def build_index(path: Path, n: int, backend: str, heads: list[str] | None = None
                ) -> tuple[list, list]:
    """A labelled index; with ``heads``, ``BehaviorRAG.fit`` of those heads (dev: every
    fourth training user) so the service classifies with that fitted model."""
    data = generate(n, seed=7).sessions
    users = sorted({s.user_id for s in data})
    held = set(users[::5])
    train = [s for s in data if s.user_id not in held]
    rag = BehaviorRAG(Settings(embed={"backend": backend}, llm={"backend": "none"}), path,
                      fresh=True)
    if heads:
        dev_users = set(sorted({s.user_id for s in train})[::4])
        rag.fit([s for s in train if s.user_id not in dev_users],
                [s for s in train if s.user_id in dev_users], heads=heads)
    else:
        rag.add_labelled(train)
        rag.save()
    return train, [s for s in data if s.user_id in held]


def start_server(index: Path, key: str, args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"BEHAVIOR_RAG_SERVE__API_KEY": key,
                        "BEHAVIOR_RAG_SERVE__ACQUIRE_TIMEOUT_S": str(args.acquire_timeout),
                        "BEHAVIOR_RAG_SERVE__MAX_CONCURRENCY": str(args.max_concurrency)}
    proc = subprocess.Popen([sys.executable, "-m", "behavior_rag.cli", "serve", "--index",
                             str(index), "--port", str(port), "--llm", args.llm,
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    with Client(url, api_key=key, max_retries=0) as c:
        while True:
            try:
                c.ready()
                return proc, url
            except BehaviorRagError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise SystemExit("the service did not start") from None
                time.sleep(0.25)


def fresh(session, i: int):
    """A copy whose text is new (first event's item id changed), so the service's embedding
    cache never answers: every request pays for rendering and embedding, as a new session
    would."""
    if not session.events:
        return session
    first = session.events[0].model_copy(update={"item_id": f"bench{os.getpid()}x{i}"})
    return session.model_copy(update={"session_id": f"{session.session_id}-b{i}",
                                      "events": [first, *session.events[1:]]})


async def level(url: str, key: str, endpoint: str, clients: int, queries: list, n: int,
                max_s: float) -> dict:
    """``n`` requests (or ``max_s`` seconds) from ``clients`` concurrent workers."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    async with AsyncClient(url, api_key=key, max_retries=0, timeout=120) as c:
        async def call(q):
            if endpoint == "similar":
                return await c.similar(session=q, k=10)
            return await c.classify(q)

        for i, q in enumerate(queries[:3]):  # warm-up: connections, code paths
            await call(fresh(q, -1 - i))
        t_end = time.monotonic() + max_s

        async def worker():
            nonlocal issued
            while issued < n and time.monotonic() < t_end:
                q = fresh(queries[issued % len(queries)], issued)
                issued += 1
                t = time.perf_counter()
                try:
                    await call(q)
                    lat.append(time.perf_counter() - t)
                except BehaviorRagError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"endpoint": endpoint, "clients": clients, "requests": issued, "ok": len(lat),
            "errors": errors, "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * q[98] if lat else float("nan"), "rps": len(lat) / wall}


def table(rows: list[dict]) -> str:
    out = ["| model | endpoint | clients | requests | ok | errors | p50 ms | p99 ms | ok req/s |",
           "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "-"
        out.append(f"| {r.get('model', '')} | `/v1/{r['endpoint']}` | {r['clients']} | "
                   f"{r['requests']} | {r['ok']} | "
                   f"{errs} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rps']:.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="Per endpoint and level.")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="Per endpoint and level.")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--warmup", type=int, default=30, help="Unmeasured requests first.")
    ap.add_argument("--sessions", type=int, default=1000, help="Synthetic sessions generated.")
    ap.add_argument("--backend", default="onnx-int8")
    ap.add_argument("--llm", default="none")
    ap.add_argument("--max-concurrency", type=int, default=2, help="serve.max_concurrency")
    ap.add_argument("--acquire-timeout", type=float, default=10.0,
                    help="serve.acquire_timeout_s: high, so requests queue (latency), not 503")
    ap.add_argument("--heads", default="", help="Fit a model of these heads first (comma-"
                    "separated; ';' between models to measure several); default: kNN only, "
                    "no fitted model.")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    models = [m.split(",") if m else None for m in args.heads.split(";")]
    levels = [int(x) for x in args.concurrency.split(",")]
    key = secrets.token_urlsafe(24)
    rows = []
    for heads in models:
        with tempfile.TemporaryDirectory() as tmp:
            index = Path(tmp) / "index"
            t = time.perf_counter()
            train, queries = build_index(index, args.sessions, args.backend, heads)
            name = "+".join(heads) if heads else "kNN only (no fit)"
            print(f"index: {len(train)} labelled sessions in {time.perf_counter() - t:.1f} s; "
                  f"{len(queries)} query sessions; model {name}", file=sys.stderr)
            proc, url = start_server(index, key, args)
            try:
                for endpoint in ("similar", "classify"):  # unmeasured: warm-up
                    asyncio.run(level(url, key, endpoint, 2, queries, args.warmup,
                                      args.max_seconds))
                for endpoint in ("similar", "classify") if heads is None else ("classify",):
                    for c in levels:
                        row = asyncio.run(level(url, key, endpoint, c, queries,
                                                args.requests, args.max_seconds))
                        rows.append(row | {"model": name})
                        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    report = "\n".join([
        "# HTTP service benchmark", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.platform()} · "
        f"{os.cpu_count()} CPUs · Python {platform.python_version()}", "",
        f"Loopback; `behavior-rag serve` in its own process (max_concurrency "
        f"{args.max_concurrency}, acquire timeout {args.acquire_timeout} s, LLM `{args.llm}`, "
        f"embedder `{args.backend}`); SYNTHETIC index of {len(train)} labelled sessions; "
        f"queries: {len(queries)} held-out synthetic sessions, each request made new so the "
        f"embedding cache never answers (`similar`: by session, k=10; "
        f"`classify`: one session per request). At most {args.requests} requests or "
        f"{args.max_seconds:g} s per row; clients do not retry, so 503s show as errors.", "",
        table(rows), "",
        f"Reproduce: `python eval/bench_service.py --requests {args.requests} --max-seconds "
        f"{args.max_seconds:g} --concurrency {args.concurrency} --heads '{args.heads}' --out "
        "eval/reports/bench_service.md`", ""])
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
