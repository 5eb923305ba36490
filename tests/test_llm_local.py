"""The embedded LLM backend with the real packaged SmolLM2-135M-Instruct."""

from __future__ import annotations

import json

import pytest

from behavior_rag.llm.base import ChatMessage, LLMBackend

pytest.importorskip("gguf", reason="the 'local' extra (gguf, accelerate) is not installed")


@pytest.fixture(scope="module")
def llm(embed_home):
    from behavior_rag.llm.local import LocalLLM

    return LocalLLM("smollm2-135m", cache_root=embed_home / "models")


def test_gguf_is_converted_once_into_a_plain_hf_folder(llm, embed_home):
    from behavior_rag.llm.local import hf_folder

    assert isinstance(llm, LLMBackend)
    folder = hf_folder("smollm2-135m", embed_home / "models")
    assert folder == llm.folder and (folder / "config.json").exists()
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg  # servable by vLLM as an ordinary HF model
    assert not list(folder.parent.glob(".*tmp*"))


def test_scores_prefer_the_right_answer(llm):
    msgs = [ChatMessage(role="user", content="What is the capital of France? One word.")]
    paris, berlin, banana = llm.score_options(msgs, ["Paris", "Berlin", "banana bread"])
    assert paris > berlin and paris > banana


@pytest.mark.parametrize("user", ["viewed 9 items, carted 2, bought none. Label?",
                                  "searched once, viewed 2 items, bought one. Label?"])
def test_cached_prefix_scores_equal_a_full_forward_pass(llm, user):
    import torch

    system = "Label shopping sessions. " * 10  # a long shared prefix, as in real prompts
    msgs = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]
    options = ["cart_abandoner", "window_shopper", "focused_buyer"]
    hits_before = llm.prefix_hits
    got = llm.score_options(msgs, options, answer_prefix="Label: ")
    if "bought one" in user:  # second prompt: the system part came from the KV cache
        assert llm.prefix_hits > hits_before
    prompt = llm.prompt_text(msgs, "Label: ")
    for opt, score in zip(options, got):
        p_ids, o_ids = llm.split_tokens(prompt, opt)
        assert len(o_ids) > 1  # multi-token labels exercise the cached path
        ids = torch.cat([p_ids, o_ids])[None, :]
        n = len(p_ids)
        with torch.no_grad():
            logp = torch.log_softmax(llm.model(ids).logits[0].float(), dim=-1)
        ref = float(sum(logp[i - 1, ids[0, i]] for i in range(n, ids.shape[1])))
        assert abs(ref - score) < 1e-3, (opt, ref, score)


def test_generate_is_greedy_and_deterministic(llm):
    msgs = [ChatMessage(role="user", content="Say hello.")]
    a = llm.generate(msgs, max_tokens=12)
    assert a == llm.generate(msgs, max_tokens=12) and a.strip()
