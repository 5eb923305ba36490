"""Malformed model output and failing servers, faked at the HTTP transport (the outside seam):
the real VLLMBackend and Classifier re-ask with the validation error, then fall back to kNN."""

from __future__ import annotations

import json

import httpx
import pytest

from behavior_rag.classify import Classifier
from behavior_rag.errors import LLMError
from behavior_rag.index.build import upsert_sessions
from behavior_rag.index.faiss_index import FaissSessionIndex
from behavior_rag.llm.base import ChatMessage
from behavior_rag.llm.vllm import VLLMBackend
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.taxonomy import load_taxonomy


class FakeServer:
    """Answers chat completions from a script of replies; records what it was asked."""

    def __init__(self, replies: list[str | int]):
        self.replies, self.requests = list(replies), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, int):
            return httpx.Response(reply, text="overloaded")
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {
            "role": "assistant", "content": reply}}]})


@pytest.fixture(scope="module")
def setup(embed_home):
    from behavior_rag.embed import get_embedder

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"},
                 classify={"mode": "generate", "max_reasks": 2})
    data = generate(160, seed=4).sessions
    emb = get_embedder(s)
    index = FaissSessionIndex(emb.info, s.index)
    upsert_sessions(index, emb, data[:140], settings=s)
    return s, emb, index, data[140:]


def clf_with(server: FakeServer, setup) -> Classifier:
    s, emb, index, _ = setup
    llm = VLLMBackend("http://vllm.test/v1", model="m", transport=httpx.MockTransport(server),
                      max_retries=2, concurrency=1)
    return Classifier(index, emb, llm, load_taxonomy(), settings=s)


def test_invalid_json_is_reasked_with_the_error_then_accepted(setup):
    good = json.dumps({"label": "window_shopper", "evidence": [{"fact": "n_purchase",
                                                                "value": 0}]})
    server = FakeServer(["Sure! The label is window shopper.", '{"label": "space_pirate"}', good])
    session = setup[3][0]
    p = clf_with(server, setup).classify(session)
    assert len(server.requests) == 3
    reask = server.requests[1]["messages"][-1]["content"]
    assert "not valid" in reask
    assert "space_pirate" in server.requests[2]["messages"][-1]["content"]  # the error is named
    assert server.requests[0]["response_format"]["type"] == "json_schema"
    assert p.fallback_reason is None and p.llm_scores["window_shopper"] == 0.0
    # the model's evidence was checked: kept only if this session really has no purchase
    has_purchase = any(e.type == "purchase" for e in session.events)
    claimed = [e for e in p.evidence if e.fact == "n_purchase" and e.value == 0]
    assert bool(claimed) == (not has_purchase)


def test_never_valid_output_falls_back_to_knn_and_says_so(setup):
    server = FakeServer(["no idea"])
    p = clf_with(server, setup).classify(setup[3][1])
    assert len(server.requests) == 3  # first ask + 2 re-asks, bounded
    assert p.source == "knn" and p.llm_scores is None
    assert "invalid after 3 attempts" in p.fallback_reason
    assert p.label in load_taxonomy().names


def test_overloaded_server_is_retried_then_reported(setup):
    server = FakeServer([503, 503, json.dumps({"label": "cart_abandoner"})])
    llm = VLLMBackend("http://vllm.test/v1", model="m", transport=httpx.MockTransport(server),
                      max_retries=2)
    out = llm.generate([ChatMessage(role="user", content="hi")])
    assert json.loads(out)["label"] == "cart_abandoner" and len(server.requests) == 3
    down = VLLMBackend("http://vllm.test/v1", model="m", max_retries=1,
                       transport=httpx.MockTransport(FakeServer([500])))
    with pytest.raises(LLMError) as e:
        down.generate([ChatMessage(role="user", content="hi")])
    assert e.value.context["attempts"] == 2
    p = clf_with(FakeServer([500]), setup).classify(setup[3][2])
    assert p.source == "knn" and p.fallback_reason.startswith("LLM failed")


def test_langchain_chat_model_plugs_in_with_reask(setup):
    lc = pytest.importorskip("langchain_core.language_models.fake_chat_models",
                             reason="the 'langchain' extra is not installed")
    from behavior_rag.llm.langchain import LangChainBackend

    s, emb, index, test = setup
    model = lc.FakeListChatModel(responses=[
        "I think cart abandoner", json.dumps({"label": "cart_abandoner"})])
    clf = Classifier(index, emb, LangChainBackend(model), load_taxonomy(), settings=s)
    p = clf.classify(test[3])
    assert p.fallback_reason is None and p.llm_scores["cart_abandoner"] == 0.0
    # score mode needs log-probabilities, which chat models do not give: kNN, and it says why
    score = s.model_copy(update={"classify": s.classify.model_copy(update={"mode": "score"})})
    p = Classifier(index, emb, LangChainBackend(model), load_taxonomy(),
                   settings=score).classify(test[4])
    assert p.source == "knn" and "log-probabilities" in p.fallback_reason
