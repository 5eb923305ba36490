"""Pattern discovery on synthetic personas: clusters follow behaviour, the draft taxonomy loads
and classifies."""

from __future__ import annotations

import pytest
from sklearn.metrics import adjusted_rand_score

from behavior_rag.discover import discover, write_taxonomy
from behavior_rag.facts import compute_facts
from behavior_rag.llm.base import LLMBackend
from behavior_rag.synth import generate
from behavior_rag.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def three_personas():
    return generate(240, seed=12, mix={"deal_hunter": 1, "window_shopper": 1,
                                       "focused_buyer": 1}).sessions


def test_clusters_follow_the_hidden_personas(three_personas, int8_embedder, tmp_path):
    d = discover(three_personas, int8_embedder, k=3, seed=0)
    truth = [s.label for s in three_personas]
    found = [d.assignments[s.session_id] for s in three_personas]
    assert adjusted_rand_score(truth, found) > 0.3
    assert len(d.clusters) == 3 and sum(c.size for c in d.clusters) == len(three_personas)
    for c in d.clusters:
        assert c.signals and c.evidence_facts and len(c.representatives) == 3
        assert all(d.assignments[r] == c.name for r in c.representatives)
    # draft definitions: true of every member, and only of event types that set sessions apart
    tax = load_taxonomy(write_taxonomy(d, tmp_path / "t.yaml"))
    assert any(lab.requires or lab.excludes for lab in tax.labels)
    for s in three_personas:
        assert not tax.get(d.assignments[s.session_id]).violations(compute_facts(s))
    assert all("n_remove_from_cart" not in p for lab in tax.labels
               for p in lab.requires + lab.excludes)  # no synthetic persona of these removes


def test_k_is_chosen_by_silhouette(three_personas, int8_embedder):
    d = discover(three_personas, int8_embedder, k_range=(2, 5), seed=0)
    assert set(d.silhouette) == {2, 3, 4, 5}
    assert d.k == max(d.silhouette, key=d.silhouette.get)


def test_draft_taxonomy_loads_and_classifies(three_personas, int8_embedder, tmp_path,
                                             embed_home):
    from behavior_rag import BehaviorRAG
    from behavior_rag.settings import Settings

    d = discover(three_personas, int8_embedder, k=3, seed=0)
    path = write_taxonomy(d, tmp_path / "draft.yaml")
    tax = load_taxonomy(path)
    assert set(tax.names) == {c.name for c in d.clusters}
    assert "DRAFT" in path.read_text()
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 classify={"taxonomy": str(path)})
    rag = BehaviorRAG(s, tmp_path / "ix")
    labelled = [x.model_copy(update={"label": d.assignments[x.session_id]})
                for x in three_personas[:200]]
    rag.add_labelled(labelled)
    preds = rag.classify(three_personas[200:])
    agree = sum(p.label == d.assignments[x.session_id]
                for p, x in zip(preds, three_personas[200:])) / len(preds)
    assert agree > 0.6
    for p, x in zip(preds, three_personas[200:]):  # evidence is the label's definition, met
        assert not tax.get(p.label).violations(compute_facts(x))
        defined = {q.fact for q, _ in tax.get(p.label).predicates}
        assert {e.fact for e in p.evidence} == defined and not p.against


def test_cli_discover_writes_a_loadable_draft(tmp_path, embed_home):
    from tests.conftest import cli_json

    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}
    cli_json(env, "synth", "--n", "120", "--seed", "5", "--out", str(tmp_path / "s"))
    out = cli_json(env, "discover", str(tmp_path / "s"), "--out", str(tmp_path / "t.yaml"),
                   "--k-min", "2", "--k-max", "4")[0]
    assert out["k"] in (2, 3, 4) and len(out["clusters"]) == out["k"]
    assert set(load_taxonomy(tmp_path / "t.yaml").names) == {c["name"] for c in out["clusters"]}


class ScriptedNamer(LLMBackend):
    """The model seam: replies from a script, one per request, and records every request."""

    name = "scripted-namer"

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []

    def score_options(self, messages, options, *, answer_prefix=""):
        raise NotImplementedError

    def generate(self, messages, *, max_tokens=256, json_schema=None):
        self.requests.append((list(messages), json_schema))
        return self.replies.pop(0)


def test_llm_names_are_reasked_with_the_error_and_the_valid_one_used(three_personas):
    llm = ScriptedNamer([
        "Deal Hunters!", '{"name": "bargain_seeker"}',  # prose, then valid: used
        '{"name": "bargain_seeker"}', '{"name": "late_browser"}',  # taken, then new: used
        '{"name": "Bad Name"}', "no idea"])  # never valid: our own name
    d = discover(three_personas, None, k=3, seed=0, llm=llm, features="facts")
    ours = discover(three_personas, None, k=3, seed=0, features="facts")
    assert not llm.replies and len(llm.requests) == 6
    assert [c.name for c in d.clusters] == ["bargain_seeker", "late_browser",
                                            ours.clusters[2].name]
    first_reask, schema = llm.requests[1]
    assert first_reask[-2].content == "Deal Hunters!" and "Invalid JSON" in first_reask[-1].content
    assert schema["properties"]["name"]["pattern"]  # the shape is asked for, not only hoped for
    assert "already names another cluster" in llm.requests[3][0][-1].content
    assert "should match pattern" in llm.requests[5][0][-1].content
    assert [c.size for c in d.clusters] == [c.size for c in ours.clusters]
