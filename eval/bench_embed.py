"""Embedding benchmark: texts/s of torch vs onnx vs onnx-int8 on real Taobao session texts.

Same texts, same cores, one run; each backend gets a warm-up, then the backends take turns over
``--rounds`` rounds (so a noisy neighbour slows all of them alike) and the best round counts.
Cosine of each backend's vectors against torch fp32 shows what speed costs in fidelity. No
embedding cache is used here.

Usage:  python eval/bench_embed.py [--n 2000] [--rounds 2] [--out eval/reports/bench_embed.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.embed.onnx import OnnxEmbedder  # noqa: E402
from behavior_rag.embed.sentence_transformers import SentenceTransformerEmbedder  # noqa: E402
from behavior_rag.ingest.load import load_events  # noqa: E402
from behavior_rag.render import render  # noqa: E402
from behavior_rag.settings import Settings  # noqa: E402
from behavior_rag.tokens import TokenCounter  # noqa: E402

DATA = ROOT.parent / "shared/data/taobao_userbehavior/UserBehavior.dev.csv"


def main(args) -> None:
    settings = Settings()
    sessions = load_events(args.data, "taobao", settings=settings).sessions
    step = max(1, len(sessions) // args.n)
    texts = [render(s, settings=settings) for s in sessions[::step][: args.n]]
    tokens = TokenCounter.for_model("all-MiniLM-L6-v2").count_parts(texts)
    cache = settings.home / "models"
    backends = {
        "torch (sentence-transformers, fp32)": SentenceTransformerEmbedder(),
        "onnx (fp32, ONNX Runtime)": OnnxEmbedder(quantized=False, cache_root=cache),
        "onnx-int8 (dynamic int8, per-channel)": OnnxEmbedder(quantized=True, cache_root=cache),
    }
    for emb in backends.values():
        emb.embed(texts[:64])  # warm-up: lazy init, allocator, kernel selection
    best: dict[str, float] = {}
    vecs: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name, emb in backends.items():
            t = time.perf_counter()
            vecs[name] = emb.embed(texts)
            rate = len(texts) / (time.perf_counter() - t)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"round {r + 1} {name}: {rate:.1f} texts/s", flush=True)
    ref_name = next(iter(backends))
    ref = vecs[ref_name]
    rows = []
    for name in backends:
        cos = (vecs[name] * ref).sum(1)
        rows.append((name, best[name], best[name] / best[ref_name], cos.mean(), cos.min()))
    fast = rows[-1]
    lines = [
        "# Embedding benchmark (`eval/bench_embed.py`)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores (shared box), torch threads = ONNX Runtime intra-op threads = "
        f"{os.cpu_count()}. {len(texts):,} real Taobao session renderings (every "
        f"{step}th session of the dev log), {np.mean(tokens):.0f} tokens on average "
        f"(max {max(tokens)}), batch 32 (torch) / 16 (ONNX, length-sorted). Best of "
        f"{args.rounds} interleaved rounds.", "",
        "| backend | texts/s | vs torch | mean cosine to torch fp32 | min cosine |",
        "|---|---|---|---|---|",
        *[f"| {n} | {r:.1f} | {x:.2f}x | {c:.4f} | {m:.4f} |" for n, r, x, c, m in rows],
        "", "## Target: fast path >= 3x torch, mean cosine >= 0.99", "",
        f"- onnx-int8: {fast[2]:.2f}x torch at mean cosine {fast[3]:.4f}: speed "
        f"{'met' if fast[2] >= 3 else f'NOT met (short by {3 - fast[2]:.2f}x)'}, fidelity "
        f"{'met' if fast[3] >= 0.99 else 'NOT met'}.",
        *([] if fast[2] >= 3 else [
        "- Why not 3x here: dynamic int8 quantises the weights of the linear layers only; each "
        "matmul first quantises its activations at run time, and softmax, GELU, LayerNorm and "
        "the attention score matmuls stay fp32, so only part of the work gets faster (we have "
        "not profiled the split). Things tried while choosing the export, on 300 of these "
        "texts: per-tensor weight scales (no faster, mean cosine ~0.94), ONNX Runtime's BERT "
        "graph fusion before quantising (no faster), batch 8/32/128 (16-32 best). Static int8 "
        "(calibrated activations) or a distilled smaller model are the next steps, not done.",]),
        "- Where the real speed-up comes from in use: the content-hash cache — re-indexing an "
        "unchanged session costs its rendering only (see tests/test_similar.py).",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    replace_file(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", default=str(ROOT / "eval/reports/bench_embed.md"))
    main(p.parse_args())
