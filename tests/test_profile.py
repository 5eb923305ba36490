"""User profiles on real Taobao users and CDNOW customers: every claim re-checks by code."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from behavior_rag.ingest.load import load_events
from behavior_rag.llm.base import LLMBackend
from behavior_rag.profile import build_profile, similar_profiles, verify_profile
from tests.conftest import CDNOW_SAMPLE, TAOBAO, need


def top_users(sessions, n=3):
    """The README's users: most sessions first, ties by id (stable)."""
    c = Counter(s.user_id for s in sessions)
    return [u for u, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


@pytest.fixture(scope="module")
def taobao_sessions():
    return load_events(need(TAOBAO), "taobao").sessions


@pytest.fixture(scope="module")
def cdnow_sessions():
    return load_events(need(CDNOW_SAMPLE), "cdnow").sessions


def _end(sessions):
    return max(e.timestamp for s in sessions for e in s.events)


def test_taobao_profiles_cite_only_verified_facts(taobao_sessions):
    for user in top_users(taobao_sessions):
        p = build_profile(user, taobao_sessions, now=_end(taobao_sessions))
        assert verify_profile(p, taobao_sessions) == []
        mine = [s for s in taobao_sessions if s.user_id == user]
        assert p.facts["n_sessions"].value == len(mine)
        assert p.facts["n_purchases"].value == sum(e.type == "purchase" for s in mine
                                                   for e in s.events)
        assert {"cart_rate", "top_categories", "part_of_day"} <= set(p.facts)
        assert any("brand" in c for c in p.cannot_infer)  # Taobao has no brands or prices
        for c in p.claims:
            assert c.sessions and set(c.sessions) <= set(p.session_ids)


def test_cdnow_profiles_say_what_cannot_be_inferred(cdnow_sessions):
    for user in top_users(cdnow_sessions):
        p = build_profile(user, cdnow_sessions, now=_end(cdnow_sessions))
        assert verify_profile(p, cdnow_sessions) == []
        mine = [e for s in cdnow_sessions if s.user_id == user for e in s.events]
        assert p.facts["monetary_total"].value == pytest.approx(sum(e.price for e in mine),
                                                                abs=0.01)
        assert "cart_rate" not in p.facts and "part_of_day" not in p.facts
        assert any(c.startswith("funnel") for c in p.cannot_infer)
        assert "Not inferable" in p.narrative


class ScriptedModel:
    """The model seam: replies with one true and one false claim (an outside component)."""

    name = "scripted"

    def __init__(self, true_value):
        self.true_value = true_value

    def generate(self, messages, *, max_tokens=256, json_schema=None):
        return json.dumps({"claims": [
            {"fact": "n_sessions", "value": self.true_value, "sentence": "A regular visitor."},
            {"fact": "n_purchases", "value": 999, "sentence": "Bought 999 things."}]})


def test_llm_claims_are_kept_only_when_they_verify(taobao_sessions):
    user = top_users(taobao_sessions, 1)[0]
    n = sum(s.user_id == user for s in taobao_sessions)
    p = build_profile(user, taobao_sessions, llm=ScriptedModel(n))
    assert p.claims_dropped == 1 and "999" not in p.narrative
    llm_claims = [c for c in p.claims if c.source == "llm"]
    assert [c.fact for c in llm_claims] == ["n_sessions"] and "A regular visitor." in p.narrative
    assert verify_profile(p, taobao_sessions) == []


def test_shoppers_like_this_user(taobao_sessions, int8_embedder):
    users = top_users(taobao_sessions, 8)
    profiles = [build_profile(u, taobao_sessions) for u in users]
    got = similar_profiles(profiles[0], profiles, int8_embedder, k=3)
    assert len(got) == 3 and users[0] not in [u for u, _ in got]
    assert got[0][1] >= got[-1][1]


def test_profile_through_the_api_after_reload(tmp_path, embed_home, taobao_sessions):
    from behavior_rag import BehaviorRAG
    from behavior_rag.settings import Settings

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    user = top_users(taobao_sessions, 1)[0]
    mine = [x for x in taobao_sessions if x.user_id == user]
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.index_sessions(mine + [x for x in taobao_sessions if x.user_id != user][:50])
    rag.save()
    again = BehaviorRAG(s, tmp_path / "ix")  # events come back from <index>/sessions
    p = again.profile(user)
    assert p.facts["n_sessions"].value == len(mine)
    assert verify_profile(p, mine) == []
    again.delete_sessions([mine[0].session_id])
    again.save()
    assert BehaviorRAG(s, tmp_path / "ix").profile(user).facts["n_sessions"].value == \
        len(mine) - 1


class CountingModel:
    """The model seam: a scripted reply per call, and the calls counted."""

    name = "counting"

    def __init__(self, reply):
        self.reply, self.calls = reply, 0

    def generate(self, messages, *, max_tokens=256, json_schema=None):
        self.calls += 1
        return self.reply(messages[-1].content)


def _given(prompt: str) -> dict:
    return json.loads(prompt[prompt.index("{"): prompt.index("}\n") + 1])


def test_a_model_whose_claims_never_verify_is_asked_once_and_says_why(taobao_sessions):
    user = top_users(taobao_sessions, 1)[0]
    wrong = CountingModel(lambda prompt: json.dumps({"claims": [
        {"fact": k, "value": 12345, "sentence": "Twelve thousand."} for k in _given(prompt)]}))
    p = build_profile(user, taobao_sessions, llm=wrong)
    assert wrong.calls == 1 and "stopped after batch 1" in p.llm_note
    assert p.llm_dropped and all("differs from the computed" in d.reason for d in p.llm_dropped)
    assert p.claims_dropped == len(p.llm_dropped) and "12345" not in p.narrative
    chatty = CountingModel(lambda prompt: "Sure! The shopper likes shopping.")
    p = build_profile(user, taobao_sessions, llm=chatty)
    assert chatty.calls == 2  # asked, re-asked once with the validation error, then stopped
    assert "not JSON" in p.llm_dropped[0].reason and "stopped after batch 1" in p.llm_note
    assert p.llm_dropped[0].sentence.startswith("Sure!")


def test_a_model_that_verifies_is_asked_for_every_fact(taobao_sessions):
    user = top_users(taobao_sessions, 1)[0]
    good = CountingModel(lambda prompt: json.dumps({"claims": [
        {"fact": k, "value": v, "sentence": f"The {k.replace('_', ' ')} fact holds."}
        for k, v in _given(prompt).items()]}))
    p = build_profile(user, taobao_sessions, llm=good)
    assert good.calls > 1 and p.llm_note is None and p.llm_dropped == []
    assert {c.fact for c in p.claims if c.source == "llm"} == set(p.facts)
    assert verify_profile(p, taobao_sessions) == []


def test_a_sentence_stating_an_unheld_number_is_dropped(taobao_sessions):
    user = top_users(taobao_sessions, 1)[0]
    n = sum(s.user_id == user for s in taobao_sessions)
    liar = CountingModel(lambda prompt: json.dumps({"claims": [
        {"fact": "n_sessions", "value": n, "sentence": f"{n + 40} visits in total."}]}))
    p = build_profile(user, taobao_sessions, llm=liar)
    assert [d.fact for d in p.llm_dropped] == ["n_sessions"]
    assert f"states {n + 40}" in p.llm_dropped[0].reason and f"{n + 40} visits" not in p.narrative


class ReaskedModel(LLMBackend):
    """The model seam: its first reply is prose, every later one the asked JSON, stating the
    facts it was given; it records every request."""

    name = "reasked"

    def __init__(self):
        self.requests = []

    def score_options(self, messages, options, *, answer_prefix=""):
        raise NotImplementedError

    def generate(self, messages, *, max_tokens=256, json_schema=None):
        self.requests.append(list(messages))
        if len(self.requests) == 1:
            return "Sure! This shopper visits a lot."
        return json.dumps({"claims": [
            {"fact": k, "value": v, "sentence": f"The {k.replace('_', ' ')} fact holds."}
            for k, v in _given(messages[1].content).items()]})


def test_an_invalid_reply_is_reasked_with_the_error_and_the_valid_one_used():
    from behavior_rag.synth import generate

    sessions = generate(40, seed=2).sessions
    model = ReaskedModel()
    p = build_profile(sessions[0].user_id, sessions, llm=model)
    reask = model.requests[1]
    assert reask[-2].role == "assistant" and reask[-2].content.startswith("Sure!")
    assert reask[-1].role == "user" and "not valid" in reask[-1].content
    assert "Invalid JSON" in reask[-1].content  # the validation error, named
    assert p.llm_dropped == [] and p.llm_note is None
    assert {c.fact for c in p.claims if c.source == "llm"} == set(p.facts)
    assert verify_profile(p, sessions) == []
