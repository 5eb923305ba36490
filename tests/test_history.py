"""Cross-session facts: a shopper's earlier sessions and training-only purchase propensities
feed the facts head and its evidence, each citing sessions that ended before the one labelled;
nothing from the future or from the test split is used."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.evaluation import split_by_user
from behavior_rag.evaluation.tasks import purchase_intent
from behavior_rag.history import UserHistory, history_facts
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.types import Event


@pytest.fixture(scope="module")
def intent(embed_home, tmp_path_factory):
    """Synthetic shoppers as a pre-cart purchase-intent task, every full session recorded."""
    full = generate(500, seed=31).sessions
    sp = split_by_user(purchase_intent(full), seed=0)
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 classify={"taxonomy": "purchase_intent"})
    ix = tmp_path_factory.mktemp("hist") / "ix"
    rag = BehaviorRAG(s, ix)
    rag.add_history(full)
    rag.fit(sp.train, sp.dev)
    return rag, sp, full, s, ix


def _future_purchase(session):
    """A session of the same user a day after ``session``, buying what it viewed."""
    t = session.events[-1].timestamp + timedelta(days=1)
    item = next(e.item_id for e in session.events if e.item_id)
    events = [Event(user_id=session.user_id, timestamp=t + timedelta(seconds=i), type=kind,
                    item_id=item, category=session.events[0].category)
              for i, kind in enumerate(("view", "cart", "purchase"))]
    return session.model_copy(update={"session_id": session.session_id + "_future",
                                      "events": events, "label": None})


def test_earlier_means_ended_before_this_one_started():
    ss = generate(200, seed=3).sessions
    h = UserHistory(ss)
    s = max(ss, key=lambda x: len(h.earlier(x)))
    future = _future_purchase(s)
    h.add([future])
    got = h.earlier(s)
    assert got and all(x.events[-1].timestamp < s.events[0].timestamp for x in got)
    assert future.session_id not in {x.session_id for x in got}
    f = history_facts(s, got)
    bought = sum(e.type == "purchase" for x in got for e in x.events)
    assert f["purchases_before"].value == bought and f["sessions_before"].value == len(got)
    cited = {c.session_id for fact in f.values() for c in fact.cites}
    assert cited <= {x.session_id for x in got}


def test_the_fitted_model_uses_history_and_propensity(intent):
    rag, sp, _, s, ix = intent
    model = rag.classifier.model
    assert model.heads.history and model.heads.propensity is not None
    assert "purchases_before" in model.heads.heads["facts"].spec.names
    again = BehaviorRAG(s, ix)  # saved with the index: history store and propensity table
    a, b = rag.classify(sp.test[:20]), again.classify(sp.test[:20])
    assert [p.probabilities for p in a] == [p.probabilities for p in b]


def test_history_evidence_cites_only_earlier_sessions_of_the_user(intent):
    rag, sp, full, _, _ = intent
    by_id = {x.session_id: x for x in full}
    preds = rag.classify(sp.test)
    cited = [(s, e) for s, p in zip(sp.test, preds) for e in p.evidence + p.against if e.cites]
    assert cited  # cross-session facts do move decisions
    for s, e in cited:
        for c in e.cites:
            past = by_id[c.session_id]
            assert past.user_id == s.user_id and past.session_id != s.session_id
            assert past.events[-1].timestamp < s.events[0].timestamp
            assert all(0 <= i < past.n_events for i in c.events)


def test_a_planted_future_purchase_changes_nothing(intent):
    rag, sp, _, _, _ = intent
    s = next(x for x in sp.test if x.n_events >= 2)
    before = rag.classify(s)
    future = _future_purchase(s)
    rag.add_history([future])
    after = rag.classify(s)
    assert after.probabilities == before.probabilities
    assert future.session_id not in {c.session_id for e in after.evidence + after.against
                                     for c in e.cites}


def test_propensity_comes_from_training_sessions_only(intent):
    rag, sp, _, _, _ = intent
    train_items = {e.item_id for x in sp.train for e in x.events if e.item_id}
    table = rag.classifier.model.heads.propensity.items.counts
    assert set(table) <= train_items  # dev and test sessions never shape it
    # the same sessions with items no training session showed: no item propensity
    unseen = [x.model_copy(update={"events": [e.model_copy(update={"item_id": f"new_{i}"})
                                              for i, e in enumerate(x.events)]})
              for x in sp.test[:5]]
    for p in rag.classifier.prepare(unseen, prompts=False):
        assert p.facts.history["item_propensity"].value is None
    seen = rag.classifier.prepare([x for x in sp.test if any(
        e.item_id in table for e in x.events)][:5], prompts=False)
    assert all(0 < p.facts.history["item_propensity"].value < 1 for p in seen)
    assert np.isfinite([p.facts.history["item_propensity"].value for p in seen]).all()


def test_cli_fit_records_history_and_fits_history_facts(tmp_path, embed_home):
    from behavior_rag.heads.store import read_manifest
    from behavior_rag.ingest.store import write_store
    from tests.conftest import cli_json

    full = generate(300, seed=32).sessions
    write_store(purchase_intent(full), tmp_path / "train")
    write_store(full, tmp_path / "all")
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}
    cli_json(env, "fit", str(tmp_path / "train"), "--index", str(tmp_path / "ix"), "--taxonomy",
             "purchase_intent", "--llm", "none", "--cascade", "never", "--history",
             str(tmp_path / "all"))
    from behavior_rag.index.storage import read_config

    assert read_config(tmp_path / "ix").stores["history"].sessions == len(full)
    from behavior_rag import BehaviorRAG

    model = BehaviorRAG(index_path=tmp_path / "ix").model_path()
    assert model.name.startswith("model-") and model.parent == tmp_path / "ix"
    assert read_manifest(model).history
    assert read_manifest(model).heads["facts"].params["spec"]["history"]


def test_batches_run_ahead_or_inline_give_the_same_predictions(intent):
    """Several batches (each batch's heads in a worker while the next is prepared) predict as
    the same batches one call at a time (inline), evidence and explanations included. (Batches
    of other sizes may differ in the last bits of a probability: the stack's arithmetic.)"""
    rag, sp, _, _, _ = intent
    clf = rag.classifier
    sessions = sp.test[:60]

    def dumps(preds):
        return [p.model_dump(exclude={"timings"}) for p in preds]

    ahead = clf.classify_many(sessions, batch=16)
    inline = [p for i in range(0, len(sessions), 16)
              for p in clf.classify_many(sessions[i: i + 16])]
    assert dumps(ahead) == dumps(inline)
    assert [p.session_id for p in ahead] == [s.session_id for s in sessions]
