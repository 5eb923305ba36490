"""The classification part of the demo: label the SYNTHETIC train split, then classify held-out
synthetic sessions and a few real Taobao sessions with the configured (default: embedded) LLM.

Example:
    >>> result = classify_demo(taobao_sessions, Settings(), Path("indexes/demo-personas"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from behavior_rag.settings import Settings
from behavior_rag.types import PatternPrediction, Session

SYNTH_N, SEED = 600, 5


def _pred(p: PatternPrediction, truth: str | None) -> dict:
    return {"session_id": p.session_id, "label": p.label, "true_label": truth,
            "confidence": round(p.confidence, 3), "abstained": p.abstained, "source": p.source,
            "explanation": p.explanation, "fallback_reason": p.fallback_reason,
            "evidence": [e.model_dump(exclude_defaults=True) for e in p.evidence],
            "evidence_dropped": p.evidence_dropped}


def _service_demo(rag, session: Session) -> dict:
    """Start the HTTP service on loopback, call it once through the client, stop it."""
    import secrets

    from pydantic import SecretStr

    from behavior_rag.client import Client
    from behavior_rag.service.run import serve_in_background

    key = secrets.token_urlsafe(16)
    serve = rag.settings.serve.model_copy(update={"api_key": SecretStr(key),
                                                  "host": "127.0.0.1"})
    with serve_in_background(rag, serve) as url, Client(url, api_key=key) as client:
        p = client.classify(session)
    return {"url": url, "session_id": p.session_id, "label": p.label,
            "confidence": round(p.confidence, 3)}


def classify_demo(real: list[Session], settings: Settings, index_dir: Path) -> dict:
    """Index the labelled synthetic train split at ``index_dir`` and classify 3 held-out
    synthetic sessions (different personas) and 2 real sessions."""
    from behavior_rag.api import BehaviorRAG
    from behavior_rag.evaluation import split_by_user
    from behavior_rag.synth import generate

    sp = split_by_user(generate(SYNTH_N, seed=SEED).sessions, SEED, dev_frac=0.0,
                       test_frac=0.2)
    rag = BehaviorRAG.from_settings(settings, index_dir)
    rag.add_labelled(sp.train)
    rag.save()
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
    return {"service": service,
            "index": str(index_dir), "labelled": len(sp.train), "llm": rag.classifier.llm and
            getattr(rag.classifier.llm, "name", type(rag.classifier.llm).__name__),
            "synthetic": [_pred(p, t) for p, t in zip(preds[:3], truths)],
            "real": [_pred(p, None) for p in preds[3:]]}


def print_classify_demo(out: Console, d: dict) -> None:
    out.rule("Few-shot classification (persona taxonomy)")
    out.print(f"Labelled index: {d['labelled']} SYNTHETIC train sessions ({d['index']}); "
              f"LLM: {d['llm'] or 'none (kNN vote only)'}.")
    for title, group in (("held-out synthetic", d["synthetic"]), ("real Taobao", d["real"])):
        for p in group:
            truth = f" (true: {p['true_label']})" if p["true_label"] else ""
            out.print(f"[bold]{title} {p['session_id']}[/]: {p['label']}{truth}, confidence "
                      f"{p['confidence']:.2f}{', ABSTAINED' if p['abstained'] else ''} "
                      f"[{p['source']}]")
            out.print("  " + p["explanation"], markup=False, highlight=False, soft_wrap=True)
            for e in p["evidence"]:
                out.print(f"  - evidence: {e}", markup=False, highlight=False, soft_wrap=True)
            if p["fallback_reason"]:
                out.print(f"  (fell back: {p['fallback_reason']})", markup=False)
    sv = d["service"]
    out.rule("HTTP service")
    out.print(f"Started the service on {sv['url']}, classified {sv['session_id']} through "
              f"behavior_rag.Client: {sv['label']} ({sv['confidence']:.2f}); stopped it.",
              markup=False)
