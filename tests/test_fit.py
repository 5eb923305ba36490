"""The classifier users call: ``BehaviorRAG.fit`` -> heads, stack, cascade, saved with the index,
reloaded and checked; the LLM asked exactly as ``classify.llm`` says (requests counted at the
HTTP transport of a real VLLMBackend, the outside seam)."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import ConfigError, StoreError
from behavior_rag.heads.cascade import CascadeParams, fit_cascade
from behavior_rag.heads.store import load_model, read_manifest
from behavior_rag.ingest.store import write_store
from behavior_rag.llm.vllm import VLLMBackend
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import load_taxonomy
from tests.conftest import cli_json


def _settings(home, **classify) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    classify=classify)


class ChatServer:
    """An OpenAI-compatible chat endpoint that always answers a valid label; counts requests."""

    def __init__(self, label: str) -> None:
        self.label, self.requests = label, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        content = json.dumps({"label": self.label, "evidence": []})
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {
            "role": "assistant", "content": content}}]})


def _with_llm(embed_home, ix, server, llm_mode):
    s = _settings(embed_home, mode="generate", llm=llm_mode)
    backend = VLLMBackend("http://vllm.test/v1", model="m", concurrency=1, max_retries=0,
                          transport=httpx.MockTransport(server))
    return BehaviorRAG(s, ix, llm=backend)


def test_fit_reaches_the_personas_and_says_which_heads_decided(fitted):
    rag, report, sp, _ = fitted
    preds = rag.classify(sp.test)
    accuracy = np.mean([p.label == s.label for p, s in zip(preds, sp.test)])
    assert accuracy > 0.85  # 8 personas: chance is 1/8
    assert set(report.chosen) <= {"facts", "forest", "embed", "knn"} and report.chosen
    p = preds[0]
    assert p.source == "stack" and p.decided_by == report.chosen and not p.llm_asked
    assert set(p.head_probabilities) == set(report.chosen)  # only the heads it ran
    assert abs(sum(p.probabilities.values()) - 1) < 1e-9


def test_the_manifest_records_the_heads_cv_chose(fitted):
    rag, report, _, ix = fitted
    man = read_manifest(report.path)
    assert man.chosen == report.chosen == rag.classifier.model.heads.chosen
    assert len(man.cv_loss) == 15  # every non-empty subset of the 4 heads was scored
    assert set(man.heads) == {"facts", "forest", "embed", "knn"}
    spec = man.heads["facts"].params["spec"]
    assert spec["facts"] and man.heads["facts"].files == ["facts_gbm.txt"]
    assert man.taxonomy == "shopper-personas"
    assert {"lightgbm", "scikit-learn", "numpy"} <= set(man.versions)


def test_a_new_process_loads_the_model_and_gives_identical_probabilities(fitted, embed_home,
                                                                          tmp_path):
    rag, _, sp, ix = fitted
    write_store(sp.test[:40], tmp_path / "new")
    here = rag.classify(sp.test[:40])
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}
    there = cli_json(env, "classify", str(tmp_path / "new"), "--index", str(ix), "--llm", "none")
    assert [p["session_id"] for p in there] == [p.session_id for p in here]
    for a, b in zip(here, there):
        assert b["probabilities"] == pytest.approx(a.probabilities, abs=1e-12)
        assert b["decided_by"] == a.decided_by


def _copy(ix, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(BehaviorRAG(Settings(), ix).model_path(), dst)
    return dst


def test_a_model_for_another_taxonomy_or_embedder_is_refused(fitted, tmp_path):
    rag, _, _, ix = fitted
    info = rag.embedder.info
    with pytest.raises(ConfigError) as e:
        load_model(rag.model_path(), taxonomy=load_taxonomy("purchase_intent"), embedder=info)
    assert e.value.context["field"] == "taxonomy_hash"
    other = EmbedderInfo(id="other-model", dim=info.dim, backend="torch", max_tokens=256)
    with pytest.raises(ConfigError) as e:
        load_model(rag.model_path(), taxonomy=load_taxonomy("personas"), embedder=other)
    assert e.value.context["field"] == "embedder" and "manifest.json" in e.value.context["file"]


def test_a_tampered_file_or_feature_set_is_refused(fitted, tmp_path):
    rag, _, _, ix = fitted
    tax, info = load_taxonomy("personas"), rag.embedder.info
    model = _copy(ix, tmp_path)
    (model / "facts_gbm.txt").write_text((model / "facts_gbm.txt").read_text() + "\n")
    with pytest.raises(StoreError) as e:
        load_model(model, taxonomy=tax, embedder=info)
    assert e.value.context["file"].endswith("facts_gbm.txt")
    model = _copy(ix, tmp_path / "b")
    man = json.loads((model / "manifest.json").read_text())
    man["heads"]["facts"]["params"]["spec"]["history"] = True  # 10 more features than saved
    (model / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(StoreError) as e:
        load_model(model, taxonomy=tax, embedder=info)
    assert e.value.context["field"] == "heads.facts" and "features" in e.value.message


def test_a_pickled_array_is_never_loaded(fitted, tmp_path):
    rag, _, _, ix = fitted
    model = _copy(ix, tmp_path)
    np.save(model / "embed_coef.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    man = json.loads((model / "manifest.json").read_text())
    import hashlib

    man["files"]["embed_coef.npy"] = hashlib.sha256(
        (model / "embed_coef.npy").read_bytes()).hexdigest()
    (model / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(StoreError) as e:
        load_model(model, taxonomy=load_taxonomy("personas"), embedder=rag.embedder.info)
    assert "embed" in e.value.message


@pytest.mark.parametrize(("mode", "expect"), [("never", 0), ("always", 12)])
def test_the_llm_is_asked_exactly_as_classify_llm_says(fitted, embed_home, mode, expect):
    _, _, sp, ix = fitted
    server = ChatServer("deal_hunter")
    preds = _with_llm(embed_home, ix, server, mode).classify(sp.test[:12])
    assert server.requests == expect
    assert all(p.llm_asked == (mode == "always") for p in preds)
    assert all(("llm" in p.decided_by) == (mode == "always") for p in preds)


def test_the_cascade_asks_only_below_its_threshold(fitted, embed_home):
    _, _, sp, ix = fitted
    server = ChatServer("deal_hunter")
    rag = _with_llm(embed_home, ix, server, "cascade")
    # the fitted model with another cascade threshold: a new model (models are immutable)
    clf = rag.classifier.with_model(rag.classifier.model.model_copy(
        update={"cascade": CascadeParams(threshold=0.9, w_llm=0.5)}))
    never = BehaviorRAG(_settings(embed_home, llm="never"), ix).classify(sp.test[:30])
    unsure = sum(p.confidence < 0.9 for p in never)
    preds = clf.classify_many(rag.user_ids.sessions(sp.test[:30]))
    assert server.requests == unsure == sum(p.llm_asked for p in preds)
    assert all(p.source == ("stack+llm" if p.llm_asked else "stack") for p in preds)


def test_fit_cascade_asks_only_where_the_llm_helps():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    y = rng.choice(classes, size=300)
    stacked = rng.dirichlet([1, 1, 1], size=300)  # an unsure stack
    sure = rng.random(300) < 0.7
    stacked[sure] = np.where(np.array(classes) == y[sure, None], 0.9, 0.05)
    oracle = [{c: (0.0 if c == t else -4.0) for c in classes} for t in y]
    noise = [{c: float(rng.normal()) for c in classes} for _ in y]
    helps = fit_cascade(stacked, oracle, y, classes, max_rate=0.4)
    assert 0 < helps.dev_llm_rate <= 0.4 and helps.threshold > 0 and helps.dev_gain > 0
    assert fit_cascade(stacked, noise, y, classes).threshold == 0.0


def test_the_facts_head_picks_its_rounds_by_out_of_fold_loss(fitted):
    """A weak, imbalanced signal (like pre-cart purchase intent) overfits at the full round
    count: the head picks fewer rounds, and its out-of-fold log-loss beats the full count's."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import KFold

    from behavior_rag.heads.gbm import GBM

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 8))
    y = np.where(rng.random(1200) < 1 / (1 + np.exp(3.0 - 0.6 * X[:, 0])), "buy", "no")
    folds = list(KFold(5, shuffle=True, random_state=0).split(X))
    head = GBM(["no", "buy"], [f"x{i}" for i in range(8)])
    oof = head.fit_folds(X, y, folds)
    assert head.rounds < head.params.n_estimators
    assert head.booster.num_trees() == head.rounds
    full = np.zeros_like(oof)
    for tr, te in folds:
        full[te] = GBM(["no", "buy"], list(range(8))).fit(X[tr], y[tr]).predict_proba(X[te])
    assert log_loss(y == "buy", oof[:, 1]) < log_loss(y == "buy", full[:, 1])
    _, report, _, _ = fitted  # BehaviorRAG.fit reports the count it chose
    assert 1 <= report.dev.facts_rounds <= 200


def test_a_two_label_taxonomy_labels_by_the_threshold_fit_chose(embed_home, tmp_path):
    """Purchase intent (two labels, positive `will_buy`): fit picks the positive label's
    threshold on dev, classify gives `will_buy` exactly from that probability on — in this
    process and after a reload — and the explanation says so."""
    from behavior_rag.evaluation import purchase_intent, split_by_user
    from behavior_rag.synth import generate

    sp = split_by_user(purchase_intent(generate(500, seed=5).sessions, min_events=2), seed=0)
    s = _settings(embed_home, taxonomy="purchase_intent")
    rag = BehaviorRAG(s, tmp_path / "ix")
    t = rag.fit(sp.train, sp.dev).dev.threshold
    assert t is not None and 0 < t < 1
    assert read_manifest(rag.model_path()).threshold == t
    preds = rag.classify(sp.test)
    assert {p.label for p in preds} == {"will_buy", "no_purchase"}
    for p in preds:
        assert (p.label == "will_buy") == (p.probabilities["will_buy"] >= t)
        assert p.threshold == t and not p.abstained
        assert f"given from {t * 100:.0f}%" in p.explanation
    again = BehaviorRAG(s, tmp_path / "ix").classify(sp.test)
    assert [p.label for p in again] == [p.label for p in preds]
