"""Hybrid vectors: the text embedding joined with the session's facts, recorded in the index
config, used by similar(), the kNN vote and discovery, weight fitted on dev."""

from __future__ import annotations

import json

import numpy as np
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.errors import ConfigError
from behavior_rag.evaluation import split_by_user
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.vectors import FACTS, HybridSpec, agreement_at_k


@pytest.fixture(scope="module")
def split():
    return split_by_user(generate(360, seed=31).sessions, seed=0)


def _settings(home, hybrid: bool, **index) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    index={"hybrid": hybrid, **index})


def _agreement(rag: BehaviorRAG, queries) -> float:
    """Same-label share of each held-out session's 10 nearest labelled sessions, as similar()
    returns them to a user."""
    shares = [np.mean([n.meta.label == s.label for n in rag.similar(session=s, k=10)])
              for s in queries]
    return float(np.mean(shares))


def test_hybrid_weights_round_trip_through_the_index_config(embed_home, tmp_path, split):
    rag = BehaviorRAG(_settings(embed_home, True, hybrid_weight=0.7), tmp_path / "ix")
    rag.add_labelled(split.train)
    rag.save()
    cfg = json.loads((tmp_path / "ix" / "config.json").read_text())
    assert cfg["hybrid"]["weight"] == 0.7 and cfg["hybrid"]["facts"] == list(FACTS)
    again = BehaviorRAG(_settings(embed_home, False), tmp_path / "ix")
    assert again.index.hybrid == rag.index.hybrid  # the index's spec, not the setting
    assert again.index.dim == 384 + len(FACTS)
    hits = again.similar(session=split.test[0], k=5)
    assert len(hits) == 5 and all(h.session_id != split.test[0].session_id for h in hits)
    assert len(again.similar(text="many views, never buys", k=3)) == 3
    # a stored vector is the one a fresh query for the same session would make
    s = split.train[0]
    stored = again.index.vectors([again.index.get(s.session_id).id])[0]
    top = again.similar(session=s.model_copy(update={"session_id": "copy"}), k=1)[0]
    assert top.session_id == s.session_id and top.score == pytest.approx(1.0, abs=1e-3)
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-5)


def test_hybrid_neighbours_share_behaviour_more_than_text_ones(embed_home, tmp_path, split):
    text = BehaviorRAG(_settings(embed_home, False), tmp_path / "text")
    text.add_labelled(split.train)
    hybrid = BehaviorRAG(_settings(embed_home, True), tmp_path / "hybrid")
    hybrid.add_labelled(split.train)
    queries = split.test[:60]
    base, joined = _agreement(text, queries), _agreement(hybrid, queries)
    assert joined > base + 0.1, (base, joined)


def test_fit_chooses_the_weight_on_dev_and_records_it(embed_home, tmp_path, split):
    rag = BehaviorRAG(_settings(embed_home, True), tmp_path / "ix")
    rag.add_labelled(split.train[:20])  # a built index is rebuilt with the fitted weight
    rag.save()
    report = rag.fit(split.train, split.dev)
    assert report.hybrid is not None and report.hybrid.fitted.startswith("dev: agreement@10")
    cfg = json.loads((tmp_path / "ix" / "config.json").read_text())
    assert cfg["hybrid"]["weight"] == report.hybrid.weight
    assert len(rag.index) == len(split.train)
    # the weight chosen is the best of the grid on dev, measured the same way here
    scores = report.hybrid.dev_agreement
    assert scores[f"{report.hybrid.weight:g}"] == max(scores.values()) and len(scores) > 3
    preds = rag.classify(split.test[:30])
    assert np.mean([p.label == s.label for p, s in zip(preds, split.test[:30])]) > 0.6


def test_how_vectors_are_made_cannot_change_under_existing_vectors(embed_home, tmp_path, split):
    rag = BehaviorRAG(_settings(embed_home, False), tmp_path / "ix")
    rag.add_labelled(split.train[:10])
    with pytest.raises(ConfigError, match="reembed"):
        rag.index.set_hybrid(HybridSpec.fit(split.train[:10], weight=0.5))


def test_agreement_ignores_the_same_users_sessions():
    q = np.eye(2, dtype=np.float32)
    pool = np.eye(2, dtype=np.float32)
    # the only same-label row belongs to the query's own user: it must not count
    assert agreement_at_k(q[:1], ["a"], ["u1"], pool, ["a", "b"], ["u1", "u2"], k=1) == 0.0
    assert agreement_at_k(q[:1], ["a"], ["u9"], pool, ["a", "b"], ["u1", "u2"], k=1) == 1.0
