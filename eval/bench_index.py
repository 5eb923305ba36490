"""Search benchmark: flat / HNSW / IVF (+SQ8) at 10k, 100k and 1M vectors.

For each configuration, in one run: build time, single-query p50/p99 latency and QPS through our
API (``FaissSessionIndex.search``, metadata included) *and* through the raw FAISS call on the same
index, batch QPS, recall@10 against exact search, and index memory per million vectors.

Data: vectors are SYNTHETIC — clustered unit vectors (a mixture of von-Mises-like blobs on the
384-d sphere, so neighbourhoods exist as they do for real embeddings; uniformly random vectors
have no near neighbours and make every ANN index look bad). Queries are fresh draws from the same
mixture, not indexed points.

Usage:  python eval/bench_index.py [--sizes 10000,100000,1000000] [--threads 1]
        [--out eval/reports/bench_index.md]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.embed.base import EmbedderInfo  # noqa: E402
from behavior_rag.index.base import SessionMeta  # noqa: E402
from behavior_rag.index.faiss_index import FaissSessionIndex  # noqa: E402
from behavior_rag.settings import IndexSettings  # noqa: E402

DIM = 384
N_QUERIES = 300
K = 10


def clustered(n: int, n_clusters: int, rng: np.random.Generator, centers=None):
    if centers is None:
        centers = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        c = centers[rng.integers(0, len(centers), m)]
        # noise norm ~1.2 vs 1.0 for the centre: points sit at cosine ~0.65 from their centre,
        # so neighbours inside a blob are decided by the noise, as for real embeddings.
        x = c + rng.standard_normal((m, DIM)).astype(np.float32) * 0.06
        out[s: s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centers


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    for s in range(0, len(x), 200_000):
        sims = q @ x[s: s + 200_000].T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        cs = np.concatenate([best_s, np.take_along_axis(sims, idx, 1)], axis=1)
        ci = np.concatenate([best_i, idx + s], axis=1)
        top = np.argsort(-cs, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cs, top, 1), np.take_along_axis(ci, top, 1)
    return best_i


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(config: dict, x: np.ndarray, q: np.ndarray, truth: np.ndarray, with_meta: bool):
    spec = IndexSettings(**config, omp_threads=ARGS.threads, gpu="off")
    info = EmbedderInfo(id="bench/synthetic", dim=DIM, backend="torch", max_tokens=256)
    ix = FaissSessionIndex(info, spec)
    ids = np.arange(1, len(x) + 1, dtype=np.int64) * 7919  # sparse, non-sequential ids
    t0 = time.perf_counter()
    if with_meta:
        metas = [SessionMeta(id=int(i), session_id=f"s{i}", user_id=f"u{i % 5000}")
                 for i in ids]
        ix.upsert(x, metas)
    else:  # 1M: vectors only (a million pydantic metadata rows is a different benchmark)
        ix.vectors_.add(ids, x)
    build = time.perf_counter() - t0
    v = ix.vectors_
    raw_params = v._params(None)
    ours, raw = [], []

    def time_ours(qq):
        t = time.perf_counter()
        if with_meta:
            ix.search(qq, K)
        else:
            v.search(qq, K)
        ours.append(time.perf_counter() - t)

    def time_raw(qq):
        t = time.perf_counter()
        v.index.search(qq, K, params=raw_params)
        raw.append(time.perf_counter() - t)

    for j in range(len(q)):
        # Interleaved so both see the same machine state, and alternating who goes first: the
        # second search of a query finds the graph/lists already in cache.
        qq = q[j: j + 1]
        first, second = (time_ours, time_raw) if j % 2 == 0 else (time_raw, time_ours)
        first(qq)
        second(qq)
    t = time.perf_counter()
    _, found = v.search(q, K)
    batch_qps = len(q) / (time.perf_counter() - t)
    recall = np.mean([len(set(found[r].tolist()) & set(ids[truth[r]].tolist())) / K
                      for r in range(len(q))])
    ours_ms, raw_ms = np.array(ours) * 1e3, np.array(raw) * 1e3
    return {
        "build_s": build, "p50_ms": np.percentile(ours_ms, 50),
        "p99_ms": np.percentile(ours_ms, 99), "qps": 1e3 / ours_ms.mean(),
        "raw_p50_ms": np.percentile(raw_ms, 50), "overhead": np.median(ours_ms) / np.median(
            raw_ms) - 1, "batch_qps": batch_qps, "recall": recall,
        "mb_per_m": v.memory_bytes() / len(x) * 1e6 / 2**20,
    }


CONFIGS = {
    "flat": {"kind": "flat"},
    "flat+SQ8": {"kind": "flat", "sq8": True},
    "HNSW32": {"kind": "hnsw", "ef_search": 64},
    "HNSW32+SQ8": {"kind": "hnsw", "sq8": True, "ef_search": 64},
    "IVF": {"kind": "ivf", "nprobe": 16},
    "IVF+SQ8": {"kind": "ivf", "sq8": True, "nprobe": 16},
}
# At 1M on 2 cores: HNSW builds are estimated from the 100k build, not run (see report);
# IVF uses nlist=1024 so k-means training stays within minutes.
CONFIGS_1M = {"flat+SQ8": {"kind": "flat", "sq8": True},
              "IVF+SQ8": {"kind": "ivf", "sq8": True, "nprobe": 24, "nlist": 1024},
              "IVF+SQ8 nprobe 64": {"kind": "ivf", "sq8": True, "nprobe": 64, "nlist": 1024}}


def real_taobao(rng: np.random.Generator):
    """Real embeddings: every Taobao dev session (onnx-int8, via the embedding cache)."""
    from behavior_rag.embed import get_embedder
    from behavior_rag.ingest.load import load_events
    from behavior_rag.render import render
    from behavior_rag.settings import Settings

    path = Path(__file__).resolve().parents[2] / "shared/data/taobao_userbehavior/UserBehavior.dev.csv"
    if not path.exists():
        return None
    s = Settings(embed={"backend": "onnx-int8"})
    sessions = load_events(path, "taobao", settings=s).sessions
    vecs = get_embedder(s).embed([render(x, settings=s) for x in sessions])
    order = rng.permutation(len(vecs))
    return vecs[order[N_QUERIES:]], vecs[order[:N_QUERIES]]


def main() -> None:
    rng = np.random.default_rng(0)
    rows, notes = [], []
    if ARGS.real:
        real = real_taobao(rng)
        if real is not None:
            x, q = real
            truth = exact_topk(x, q, K)
            for name, cfg in CONFIGS.items():
                r = bench(cfg, x, q, truth, with_meta=True)
                rows.append((f"{len(x):,} real", name, r))
                print(f"real {len(x):,} {name:<18} p50 {r['p50_ms']:.3f}ms raw "
                      f"{r['raw_p50_ms']:.3f}ms recall@10 {r['recall']:.3f}", flush=True)
    hnsw_100k_build = None
    for n in ARGS.sizes:
        x, centers = clustered(n, max(50, n // 200), rng)
        q, _ = clustered(N_QUERIES, 0, rng, centers)
        truth = exact_topk(x, q, K)
        configs = CONFIGS if n < 1_000_000 else CONFIGS_1M
        for name, cfg in configs.items():
            r = bench(cfg, x, q, truth, with_meta=n <= 100_000)
            rows.append((n, name, r))
            if n == 100_000 and name == "HNSW32+SQ8":
                hnsw_100k_build = r["build_s"]
            print(f"{n:>9,} {name:<18} build {r['build_s']:7.1f}s p50 {r['p50_ms']:.3f}ms "
                  f"p99 {r['p99_ms']:.3f}ms raw p50 {r['raw_p50_ms']:.3f}ms overhead "
                  f"{r['overhead']:+.0%} recall@10 {r['recall']:.3f} "
                  f"{r['mb_per_m']:.0f} MiB/1M  rss {rss_mb():.0f} MiB", flush=True)
        del x
    if hnsw_100k_build and 1_000_000 in ARGS.sizes:
        notes.append(f"HNSW at 1M was not built: at {hnsw_100k_build:.0f} s per 100k on "
                     f"{ARGS.threads} thread(s) it would take roughly "
                     f"{hnsw_100k_build * 10 * 1.3 / 60:.0f} min here (insertion cost grows "
                     "slightly faster than linear).")
    write_report(rows, notes)


def write_report(rows, notes) -> None:
    lines = [
        "# Search benchmark (`eval/bench_index.py`)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.processor() or 'cpu'}"
        f" ({ARGS.threads} FAISS thread(s), 2-core shared box), {N_QUERIES} queries, k={K}.",
        "Rows marked *real* are all-MiniLM-L6-v2 (onnx-int8) embeddings of the real Taobao dev "
        "sessions, queried with 300 held-out sessions. All other rows use **synthetic "
        "clustered unit vectors** (384-d; random blobs, not real embeddings); queries are fresh "
        "draws. Latency is one query at a time through our API "
        "(`FaissSessionIndex.search`, metadata objects included, at 10k/100k) beside the raw "
        "FAISS `index.search` on the same index in the same loop; overhead = our p50 / raw p50 "
        "- 1. At 1M only the vector layer is timed (no metadata objects). Memory = serialised "
        "index size scaled to 1M vectors.", "",
        "| n | index | build s | p50 ms | p99 ms | QPS (1 query) | raw p50 ms | overhead | "
        "batch QPS | recall@10 | MiB per 1M |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, name, r in rows:
        lines.append(f"| {n if isinstance(n, str) else f'{n:,}'} | {name} | {r['build_s']:.1f} | {r['p50_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} | {r['qps']:,.0f} | {r['raw_p50_ms']:.3f} | "
                     f"{r['overhead']:+.0%} | {r['batch_qps']:,.0f} | {r['recall']:.3f} | "
                     f"{r['mb_per_m']:,.0f} |")
    lines += ["", "## Targets", ""]
    by = {(n, name): r for n, name, r in rows}
    h = by.get((100_000, "HNSW32"))
    if h:
        ok = h["p50_ms"] <= 0.5 and h["recall"] >= 0.95
        lines.append(f"- 100k, HNSW32: p50 {h['p50_ms']:.3f} ms (target <= 0.5), recall@10 "
                     f"{h['recall']:.3f} (>= 0.95), overhead over raw FAISS "
                     f"{h['overhead']:+.0%} (<= +20 %): "
                     f"{'met' if ok and h['overhead'] <= 0.2 else 'NOT met — see numbers'}.")
    m = [(name, r) for (n, name), r in by.items() if n == 1_000_000 and "SQ8" in name]
    for name, r in m:
        gib = r["mb_per_m"] / 1024
        lines.append(f"- 1M, {name}: {gib:.2f} GiB index, recall@10 {r['recall']:.3f} "
                     f"(target < 1 GiB at >= 0.9): "
                     f"{'met' if gib < 1 and r['recall'] >= 0.9 else 'NOT met'}.")
    small = [r["p50_ms"] - r["raw_p50_ms"] for (n, name), r in by.items()
             if isinstance(n, int) and n <= 100_000 and not name.startswith("flat")]
    if small:
        lines.append(f"- Our overhead is about {np.median(small) * 1e3:.0f} us per query in "
                     "absolute terms (median over the ANN rows up to 100k): building k hit "
                     "objects with their metadata and one Python call layer. It is a constant, "
                     "so as a ratio it is largest where FAISS is fastest (10k, SQ8).")
    lines.append("- Memory is the FAISS index itself (serialised size); the process RSS also "
                 "holds the benchmark's own copy of the vectors and ground truth.")
    lines += [f"- {n}" for n in notes]
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    replace_file(ARGS.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="10000,100000,1000000",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-real", dest="real", action="store_false",
                   help="Skip the real Taobao-embedding rows.")
    p.add_argument("--out", default="eval/reports/bench_index.md")
    ARGS = p.parse_args()
    main()
