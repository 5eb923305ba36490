"""Confidence is earned: a label reached by elimination says so, and a session unlike anything
the model was fitted on abstains and says why (issue 33, items 1 and 2)."""

from __future__ import annotations

import numpy as np

from behavior_rag.api import BehaviorRAG
from behavior_rag.facts import compute_facts
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.taxonomy import load_taxonomy


def _only_one_definition_holds(sessions, tax):
    for s in sessions:
        f = compute_facts(s)
        if sum(not lab.violations(f) for lab in tax.labels) == 1:
            return s
    raise AssertionError("no session with exactly one holding definition")


def test_an_unfitted_index_labels_by_elimination_without_claiming_certainty(embed_home,
                                                                             tmp_path):
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.index_sessions(generate(150, seed=3).sessions)
    rag.save()
    tax = load_taxonomy()
    one = _only_one_definition_holds(generate(200, seed=4).sessions, tax)
    p = BehaviorRAG(s, tmp_path / "ix").classify(one)
    assert p.by_elimination and p.source == "knn"
    assert p.probabilities[p.label] == 1.0  # the other labels are excluded by definition ...
    assert p.confidence < 1.0  # ... but the confidence is what the kNN vote gave it
    assert "by elimination" in p.explanation and "100%" not in p.explanation


def test_a_persona_model_abstains_on_real_taobao_sessions_and_says_why(fitted, taobao):
    """Fitted on synthetic personas: held-out synthetic sessions are rarely flagged, real
    Taobao sessions (no prices, other counts) mostly are, and those abstain."""
    rag, _, sp, _ = fitted
    real = [x for x in taobao.sessions if x.events][:200]
    on_real = rag.classify(real)
    on_synth = rag.classify(sp.test)
    rate_real = np.mean([p.out_of_domain for p in on_real])
    rate_synth = np.mean([p.out_of_domain for p in on_synth])
    assert rate_synth <= 0.05 and rate_real >= 0.8, (rate_synth, rate_real)
    flagged = next(p for p in on_real if p.out_of_domain)
    assert flagged.abstained and flagged.explanation.startswith("Not sure")
    assert any(w.startswith("outside what this model was fitted on") for w in flagged.warnings)
