"""The end-to-end demo behind ``behavior-rag demo`` / ``make demo``.

Ingest the real Taobao dev log when it is there (else SYNTHETIC shoppers), sessionise, print
counts and three rendered sessions; then embed the first ``DEMO_INDEX_SIZE`` multi-event sessions
into a FAISS index under ``indexes/demo`` and print the 5 shoppers most similar to one of them.
Then label the SYNTHETIC train split and classify held-out synthetic and real sessions with the
embedded LLM, printing label, confidence, explanation and verified evidence.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console

from behavior_rag.demo_classify import classify_demo, print_classify_demo
from behavior_rag.facts import compute_facts
from behavior_rag.ingest.load import load_events
from behavior_rag.render import render
from behavior_rag.settings import Settings
from behavior_rag.types import Session

TAOBAO = Path("taobao_userbehavior") / "UserBehavior.dev.csv"
# Embedding runs at ~50-100 sessions/s on 2 CPU cores: index a slice so the demo stays ~30 s
# (the content-hash cache makes re-runs near-instant).
DEMO_INDEX_SIZE = 1000


def _pick_examples(sessions: list[Session]) -> list[tuple[str, Session]]:
    """A buying, a cart-abandoning and a browsing session of readable length, chosen stably."""
    picks: list[tuple[str, Session]] = []
    mid = [s for s in sessions if 6 <= s.n_events <= 25]
    wanted = [
        ("bought something", lambda f: f.n_purchase.value > 0),
        ("carted, then left without buying", lambda f: f.cart_abandoned.value),
        ("browsed only", lambda f: f.n_cart.value == 0 and f.n_purchase.value == 0),
    ]
    for title, cond in wanted:
        for s in mid:
            if cond(compute_facts(s)) and all(s is not p for _, p in picks):
                picks.append((title, s))
                break
    return picks


def _similar_demo(sessions: list[Session], settings: Settings, index_dir: Path | None) -> dict:
    from behavior_rag.api import BehaviorRAG
    from behavior_rag.index.base import Filter

    pool = [s for s in sessions if s.n_events >= 2][:DEMO_INDEX_SIZE]
    rag = BehaviorRAG(settings, index_dir or settings.index_dir / "demo")
    report = rag.index_sessions(pool)
    cfg = rag.save()
    query = next((s for s in pool if 5 <= s.n_events <= 12), pool[0])
    hits = rag.similar(user_id=query.user_id, k=5, filter=Filter(), with_text=True)
    return {"index": str(rag.index_path), "indexed": len(rag.index), "embedded": report.embedded,
            "backend": cfg.embedder.backend, "kind": cfg.kind,
            "query_user": query.user_id, "query_session": query.session_id,
            "query_text": render(query, settings=settings),
            "neighbors": [{"user_id": h.user_id, "session_id": h.session_id,
                           "score": round(h.score, 4), "label": h.meta.label, "text": h.text}
                          for h in hits]}


def run_demo(data_dir: Path | None = None, as_json: bool = False,
             index_dir: Path | None = None) -> dict:
    """Run the demo and print it; returns what was printed as a dict (for tests)."""
    settings = Settings()
    data_dir = data_dir or settings.data_dir
    out = Console()
    path = data_dir / TAOBAO
    if path.is_file():
        result = load_events(path, "taobao", settings=settings)
        sessions, source = result.sessions, f"real Taobao UserBehavior log ({path})"
        seconds = result.report.seconds
    else:
        from behavior_rag.synth import generate

        sessions = generate(1000, seed=0).sessions
        source, seconds = "SYNTHETIC shoppers (real data not found at " + str(path) + ")", 0.0
    facts = [compute_facts(s) for s in sessions]
    summary = {
        "source": source,
        "events": sum(s.n_events for s in sessions),
        "sessions": len(sessions),
        "users": len({s.user_id for s in sessions}),
        "sessions_with_purchase": sum(f.n_purchase.value > 0 for f in facts),
        "sessions_with_abandoned_cart": sum(bool(f.cart_abandoned.value) for f in facts),
        "median_events_per_session": statistics.median(s.n_events for s in sessions),
        "ingest_seconds": seconds,
        "examples": [{"title": t, "session_id": s.session_id, "text": render(s, settings=settings)}
                     for t, s in _pick_examples(sessions)],
    }
    summary["similar"] = _similar_demo(sessions, settings, index_dir)
    base = index_dir or settings.index_dir / "demo"
    summary["classify"] = classify_demo(sessions if path.is_file() else [], settings,
                                        base.with_name(base.name + "-personas"))
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return summary
    out.rule("[bold]behavior_rag demo")
    out.print(f"Source: {source}")
    out.print(f"{summary['events']:,} events -> {summary['sessions']:,} sessions of "
              f"{summary['users']:,} users (gap {settings.ingest.session_gap_minutes:g} min, "
              f"{seconds}s); {summary['sessions_with_purchase']:,} sessions with a purchase, "
              f"{summary['sessions_with_abandoned_cart']:,} with an abandoned cart; median "
              f"{summary['median_events_per_session']} events per session.")
    for ex in summary["examples"]:
        out.rule(f"{ex['title']}: {ex['session_id']}")
        out.print(ex["text"], markup=False, highlight=False, soft_wrap=True)
    sim = summary["similar"]
    out.rule(f"5 shoppers most similar to user {sim['query_user']}")
    out.print(f"Indexed {sim['indexed']:,} sessions ({sim['kind']} FAISS index, "
              f"{sim['backend']} embeddings, {sim['embedded']:,} newly embedded) in "
              f"{sim['index']}. User vector = mean of the user's session vectors.")
    out.print(f"Query: user {sim['query_user']}, e.g. session {sim['query_session']}: "
              + sim["query_text"].split("\n")[0], markup=False, highlight=False, soft_wrap=True)
    for n, h in enumerate(sim["neighbors"], 1):
        out.print(f"{n}. user {h['user_id']} (cosine {h['score']:.3f}), best-matching session "
                  f"{h['session_id']}" + (f", label {h['label']}" if h["label"] else ""))
        out.print("   " + h["text"].split("\n")[0], markup=False, highlight=False,
                  soft_wrap=True)
    print_classify_demo(out, summary["classify"])
    out.rule()
    return summary
