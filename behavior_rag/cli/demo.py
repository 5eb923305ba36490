"""The end-to-end demo behind ``behavior-rag demo`` / ``make demo``.

Ingest the real Taobao dev log when it is there (else SYNTHETIC shoppers), sessionise, print
counts and three rendered sessions; then embed the first ``DEMO_INDEX_SIZE`` multi-event sessions
into a FAISS index under ``indexes/demo`` and print the 5 shoppers most similar to one of them.
Then label the SYNTHETIC train split and classify held-out synthetic and real sessions with the
embedded LLM, printing label, confidence, explanation and verified evidence.
"""

from __future__ import annotations

import json
import secrets
import statistics
from pathlib import Path
from typing import Optional

import typer
from pydantic import SecretStr
from rich.console import Console

from behavior_rag.api import BehaviorRAG
from behavior_rag.client import Client
from behavior_rag.evaluation import split_by_user
from behavior_rag.facts import compute_facts
from behavior_rag.index.base import Filter
from behavior_rag.ingest.load import load_events
from behavior_rag.render import render
from behavior_rag.service.run import serve_in_background
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.types import PatternPrediction, Session

TAOBAO = Path("taobao_userbehavior") / "UserBehavior.dev.csv"
# Embedding runs at ~50-100 sessions/s on 2 CPU cores: index a slice so the demo stays ~30 s
# (the content-hash cache makes re-runs near-instant).
DEMO_INDEX_SIZE = 1000

SYNTH_N, SEED = 600, 5
DEMO_CASCADE_DEV = 30


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
    personas = base.with_name(base.name + "-personas")
    summary["classify"] = classify_demo(sessions if path.is_file() else [], settings, personas)
    port = settings.serve.port
    summary["web_view"] = {"command": f"behavior-rag serve --index {personas} "
                           "--insecure-no-auth", "url": f"http://127.0.0.1:{port}/ui/"}
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
    out.rule("Web view")
    web = summary["web_view"]
    out.print(f"Look at these sessions, patterns, similar shoppers and profiles in a browser: "
              f"run `{web['command']}`, then open {web['url']}", markup=False,
              highlight=False, soft_wrap=True)
    out.rule()
    return summary


def _pred(p: PatternPrediction, truth: str | None) -> dict:
    return {"session_id": p.session_id, "label": p.label, "true_label": truth,
            "confidence": round(p.confidence, 3), "abstained": p.abstained, "source": p.source,
            "decided_by": p.decided_by, "llm_asked": p.llm_asked,
            "explanation": p.explanation, "fallback_reason": p.fallback_reason,
            "evidence": [e.model_dump(exclude_defaults=True) for e in p.evidence],
            "against": [e.model_dump(exclude_defaults=True) for e in p.against],
            "voters": [v.model_dump() for v in p.voters], "warnings": p.warnings,
            "evidence_dropped": p.evidence_dropped}


def _service_demo(rag, session: Session) -> dict:
    """Start the HTTP service on loopback, call it once through the client, stop it."""
    key = secrets.token_urlsafe(16)
    serve = rag.settings.serve.model_copy(update={"api_key": SecretStr(key),
                                                  "host": "127.0.0.1"})
    with serve_in_background(rag, serve) as url, Client(url, api_key=key) as client:
        p = client.classify(session)
    return {"url": url, "session_id": p.session_id, "label": p.label,
            "confidence": round(p.confidence, 3)}


def classify_demo(real: list[Session], settings: Settings, index_dir: Path) -> dict:
    """Fit the classifier on the labelled synthetic train split (dev: another split of
    users) at ``index_dir``, classify the held-out synthetic users with the cascade, and show
    3 of them (different personas) and 2 real sessions."""
    sp = split_by_user(generate(SYNTH_N, seed=SEED).sessions, SEED, dev_frac=0.2,
                       test_frac=0.2)
    # The cascade is fitted by asking the LLM about the least confident dev sessions; the
    # demo asks about DEMO_CASCADE_DEV of them (the default is 100) to stay about a minute.
    settings = settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"cascade_dev_max": DEMO_CASCADE_DEV})})
    rag = BehaviorRAG.from_settings(settings, index_dir)
    fit = rag.fit(sp.train, sp.dev)
    test = rag.classify(sp.test)
    held, seen = [], set()
    for s in sp.test:
        if s.label not in seen and s.n_events >= 4:
            held.append(s)
            seen.add(s.label)
        if len(held) == 3:
            break
    picks = [s for s in real if 5 <= s.n_events <= 20][:2]
    preds = rag.classify(held + picks)
    truths = [s.label for s in held] + [None] * len(picks)
    service = _service_demo(rag, held[0])
    return {"service": service, "fit": {
                "heads": fit.chosen, "dev": fit.dev.dev_metrics, "threshold":
                fit.cascade.threshold, "dev_llm_rate": fit.cascade.dev_llm_rate},
            "held_out": {"sessions": len(test), "accuracy": round(sum(
                p.label == s.label for p, s in zip(test, sp.test)) / max(len(test), 1), 3),
                "llm_asked": sum(p.llm_asked for p in test)},
            "index": str(index_dir), "labelled": len(sp.train), "llm": rag.classifier.llm and
            getattr(rag.classifier.llm, "name", type(rag.classifier.llm).__name__),
            "synthetic": [_pred(p, t) for p, t in zip(preds[:3], truths)],
            "real": [_pred(p, None) for p in preds[3:]]}


def print_classify_demo(out: Console, d: dict) -> None:
    out.rule("Classification (persona taxonomy): heads + stack, the LLM where unsure")
    f, h = d["fit"], d["held_out"]
    out.print(f"Fitted on {d['labelled']} SYNTHETIC train sessions ({d['index']}): the stack "
              f"combines {' + '.join(f['heads'])} (chosen by CV); dev macro-F1 "
              f"{f['dev'].get('macro_f1', 0):.3f}. LLM ({d['llm'] or 'none'}) asked below "
              f"confidence {f['threshold']:.2f} (dev: {f['dev_llm_rate']:.0%} of sessions; 0 "
              f"means it did not help on dev, so it is never asked).")
    out.print(f"Held-out synthetic users: {h['sessions']} sessions, accuracy "
              f"{h['accuracy']:.1%}, LLM asked for {h['llm_asked']}.")
    for title, group in (("held-out synthetic", d["synthetic"]), ("real Taobao", d["real"])):
        for p in group:
            truth = f" (true: {p['true_label']})" if p["true_label"] else ""
            out.print(f"[bold]{title} {p['session_id']}[/]: {p['label']}{truth}, confidence "
                      f"{p['confidence']:.2f}{', ABSTAINED' if p['abstained'] else ''} "
                      f"[decided by {' + '.join(p['decided_by'])}"
                      f"{'; LLM asked' if p['llm_asked'] else ''}]")
            out.print("  " + p["explanation"], markup=False, highlight=False, soft_wrap=True)
            for sign, key in (("+", "evidence"), ("-", "against")):
                for e in p[key]:
                    out.print(f"  {sign} {e['text']}  [{e['fact']} = {e['value']}, "
                              f"contribution {e.get('contribution', 0):+.2f}, events "
                              f"{e.get('events', [])}]", markup=False, highlight=False,
                              soft_wrap=True)
            for w in p["warnings"]:
                out.print(f"  ! {w}", markup=False, highlight=False, soft_wrap=True)
            if p["fallback_reason"]:
                out.print(f"  (fell back: {p['fallback_reason']})", markup=False)
    sv = d["service"]
    out.rule("HTTP service")
    out.print(f"Started the service on {sv['url']}, classified {sv['session_id']} through "
              f"behavior_rag.Client: {sv['label']} ({sv['confidence']:.2f}); stopped it.",
              markup=False)


def demo_cmd(
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the real datasets "
                                            "(default: BEHAVIOR_RAG_DATA_DIR or ../shared/data)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Where the demo index goes "
                                             "(default: indexes/demo)."),
) -> None:
    """End-to-end demo on the embedded defaults: ingest, sessionise, render, index, similar."""
    run_demo(data_dir=data_dir, as_json=as_json, index_dir=index_dir)
