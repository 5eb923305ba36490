"""LoRA fine-tune: a few steps move label scores the right way; adapters round-trip and are
refused for another taxonomy or base model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from behavior_rag.errors import ConfigError


def _true_label_margin(llm, clf, sessions):
    """Log-softmax of the true label over the label scores, averaged per label and then over
    labels: the trainer keeps the adapter with the best macro-F1, which may trade the majority
    label's score for the rare one's, so a plain mean could fall while both labels are learnt."""
    out: dict[str, list[float]] = {}
    for p in clf.prepare(sessions):
        sc = np.array(llm.score_options(p.messages, clf.labels,
                                        answer_prefix=clf.prompt.answer_prefix))
        sc = sc - np.logaddexp.reduce(sc)
        out.setdefault(p.session.label, []).append(sc[clf.labels.index(p.session.label)])
    return float(np.mean([np.mean(v) for v in out.values()]))


def test_few_steps_raise_the_true_labels_score(tiny_adapter):
    from behavior_rag.classify import Classifier
    from behavior_rag.embed import get_embedder
    from behavior_rag.index.build import upsert_sessions
    from behavior_rag.index.faiss_index import FaissSessionIndex
    from behavior_rag.llm.local import LocalLLM
    from behavior_rag.taxonomy import load_taxonomy

    res, sp, s = tiny_adapter
    # both scored with the adapter's training prompt, as inference with the adapter is
    s = s.model_copy(update={"classify": s.classify.model_copy(
        update={"prompt": res.card.prompt})})
    emb = get_embedder(s)
    index = FaissSessionIndex(emb.info, s.index)
    upsert_sessions(index, emb, sp.train, settings=s, split="train")
    seen = sp.train[:10]
    assert len({x.label for x in seen}) == 2  # both labels measured
    base = LocalLLM("smollm2-135m", cache_root=s.home / "models")
    tuned = LocalLLM("smollm2-135m", cache_root=s.home / "models", adapter=res.adapter)
    clf_b = Classifier(index, emb, base, load_taxonomy("purchase_intent"), settings=s)
    clf_t = Classifier(index, emb, tuned, load_taxonomy("purchase_intent"), settings=s)
    # deterministic (seeded), so any gain is the training's; 4 steps of lr 1e-3 give ~0.1 nats
    assert _true_label_margin(tuned, clf_t, seen) > _true_label_margin(base, clf_b, seen) + 0.05
    assert res.steps == 4 and res.sec_per_step > 0 and res.peak_rss_mb > 100
    assert res.validation == "lora-layers"  # the fast, exact validation path was taken
    assert res.prompt_tokens > res.prefix_tokens > 0
    assert res.card.metrics["best_step"] in (0, 4)


def test_adapter_folder_round_trips_through_settings(tiny_adapter):
    from behavior_rag.llm.base import ChatMessage
    from behavior_rag.llm.factory import get_llm

    res, _, s = tiny_adapter
    assert set(res.phase_seconds) == {"train", "validate", "prepare_and_save"}
    assert res.phase_seconds["train"] > 0 and res.phase_seconds["validate"] > 0
    files = {p.name for p in __import__("pathlib").Path(res.adapter).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "model_card.json"} <= files
    card = json.loads((__import__("pathlib").Path(res.adapter) / "model_card.json").read_text())
    assert card["base_model"] == "smollm2-135m" and card["taxonomy"] == "purchase-intent"
    assert card["data_hash"] and card["metrics"]["steps"] == 4
    msgs = [ChatMessage(role="user", content="viewed 3 phones, bought one. Label?")]
    opts = ["will_buy", "no_purchase"]
    s2 = s.model_copy(update={"llm": s.llm.model_copy(update={"adapter": res.adapter})})
    a = get_llm(s2).score_options(msgs, opts, answer_prefix="Label: ")
    b = get_llm(s2).score_options(msgs, opts, answer_prefix="Label: ")
    base = get_llm(s).score_options(msgs, opts, answer_prefix="Label: ")
    assert a == pytest.approx(b, abs=1e-5) and a != pytest.approx(base, abs=1e-3)


def test_mismatched_taxonomy_or_base_model_is_refused(tiny_adapter, tmp_path):
    from behavior_rag.llm.factory import get_llm
    from behavior_rag.llm.local import LocalLLM

    res, _, s = tiny_adapter
    other = s.model_copy(update={
        "llm": s.llm.model_copy(update={"adapter": res.adapter}),
        "classify": s.classify.model_copy(update={"taxonomy": "personas"})})
    with pytest.raises(ConfigError, match="taxonomy"):
        get_llm(other)
    moved = tmp_path / "other-base"
    shutil.copytree(res.adapter, moved)
    card = json.loads((moved / "model_card.json").read_text())
    (moved / "model_card.json").write_text(json.dumps(card | {"base_model": "gemma3-270m"}))
    with pytest.raises(ConfigError, match="gemma3-270m"):
        LocalLLM("smollm2-135m", cache_root=s.home / "models", adapter=moved)


def test_shared_prefix_gives_the_same_loss_as_whole_prompts(embed_home):
    """Training reuses the static prefix's KV cache; the loss it optimises must be the loss of
    the whole prompts (only the gradient through the prefix positions is dropped)."""
    import torch

    from behavior_rag.finetune.step import PrefixKV, batch_loss, shared_prefix
    from behavior_rag.llm.base import ChatMessage
    from behavior_rag.llm.local import LocalLLM

    llm = LocalLLM("smollm2-135m", cache_root=embed_home / "models")
    system = ChatMessage(role="system", content="Label shopping sessions: will_buy or "
                                                "no_purchase. " * 3)
    rows = []
    for text, label in [("viewed 3 phones, carted one", "will_buy"),
                        ("searched 'tv' twice and left after 40 seconds", "no_purchase"),
                        ("one view", "no_purchase")]:
        prompt = llm.prompt_text([system, ChatMessage(role="user", content=text)], "Label: ")
        rows.append(llm.split_tokens(prompt, label))
    prefix = shared_prefix([p for p, _ in rows])
    assert len(prefix) > 20 and all(torch.equal(p[: len(prefix)], prefix) for p, _ in rows)
    pad = llm.tok.pad_token_id if llm.tok.pad_token_id is not None else llm.tok.eos_token_id
    with torch.no_grad():
        whole = batch_loss(llm.model, rows, torch, pad)
        # first=0: no layer is frozen below an adapter, so every layer reruns the prefix
        shared = batch_loss(llm.model, rows, torch, pad,
                             PrefixKV(llm.model, prefix, 0, llm.cache_kw))
        single = torch.stack([batch_loss(llm.model, [r], torch, pad) for r in rows]).mean()
    assert float(shared) == pytest.approx(float(whole), abs=1e-3)
    assert float(whole) == pytest.approx(float(single), abs=1e-3)  # padding changes nothing


def test_prefix_kv_below_the_adapter_is_computed_once_and_stays_exact(embed_home):
    """The lower layers' prefix KV is kept for the whole run and only the LoRA layers are
    rerun each step: after the adapter's weights move, the loss must still be the loss of
    the whole prompts under the current adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from behavior_rag.finetune.step import PrefixKV, batch_loss, shared_prefix
    from behavior_rag.llm.base import ChatMessage
    from behavior_rag.llm.local import LocalLLM

    llm = LocalLLM("smollm2-135m", cache_root=embed_home / "models")
    system = ChatMessage(role="system", content="Label shopping sessions: will_buy or "
                                                "no_purchase. " * 3)
    rows = [llm.split_tokens(llm.prompt_text([system, ChatMessage(role="user", content=t)],
                                             "Label: "), lab)
            for t, lab in [("viewed 3 phones, carted one", "will_buy"),
                           ("searched 'tv' twice and left", "no_purchase")]]
    prefix = shared_prefix([p for p, _ in rows])
    n = llm.model.config.num_hidden_layers
    model = get_peft_model(llm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj",
                                                                       "down_proj"],
                                                 layers_to_transform=[n - 2, n - 1]))
    pkv = PrefixKV(model, prefix, n - 2, llm.cache_kw)
    pad = llm.tok.eos_token_id
    with torch.no_grad():
        before = batch_loss(model, rows, torch, pad, pkv)
        for name, w in model.named_parameters():  # move the adapter (B starts at zero)
            if "lora_B" in name:
                w.add_(torch.randn_like(w) * 0.05)
        whole = batch_loss(model, rows, torch, pad)
        kept = batch_loss(model, rows, torch, pad, pkv)
    assert abs(float(whole) - float(before)) > 1e-2  # the adapter changed the prefix's KV too
    assert float(kept) == pytest.approx(float(whole), abs=1e-3)


def test_adapter_brings_its_prompt_settings(tiny_adapter):
    """The adapter's card says which prompt file and how many few-shot neighbours it was
    trained with; settings take them, and refuse an explicit different value."""
    from pydantic import ValidationError

    from behavior_rag.settings import Settings

    res, _, s = tiny_adapter
    assert res.card.k_examples == 1 and res.card.prompt == "classify_compact"
    got = Settings(home=s.home, llm={"adapter": res.adapter},
                   classify={"taxonomy": "purchase_intent"})
    assert got.classify.k_examples == 1 and got.classify.prompt == "classify_compact"
    with pytest.raises(ValidationError, match="k_examples=1"):
        Settings(home=s.home, llm={"adapter": res.adapter},
                 classify={"taxonomy": "purchase_intent", "k_examples": 3})
    with pytest.raises(ValidationError, match="prompt=classify_compact"):
        Settings(home=s.home, llm={"adapter": res.adapter},
                 classify={"taxonomy": "purchase_intent", "prompt": "classify"})


def test_adapter_with_an_edited_prompt_file_is_refused(tiny_adapter, tmp_path):
    """The card records the training prompt's hash: after the prompt file is edited the adapter
    would see a prompt it was never trained on, so it is refused with the file named."""
    from behavior_rag.llm.adapter import check_adapter
    from behavior_rag.prompts import load_prompt
    from behavior_rag.resources import prompts_dir
    from behavior_rag.taxonomy import load_taxonomy

    res, _, _ = tiny_adapter
    tax = load_taxonomy("purchase_intent")
    assert check_adapter(res.adapter, "smollm2-135m", tax).prompt_hash == \
        load_prompt("classify_compact").content_hash
    edited = tmp_path / "my_prompt.yaml"
    edited.write_text((prompts_dir() / "classify_compact.yaml").read_text().replace(
        "exactly one label", "one label"))
    moved = tmp_path / "adapter"
    shutil.copytree(res.adapter, moved)
    card = json.loads((moved / "model_card.json").read_text())
    (moved / "model_card.json").write_text(json.dumps(card | {"prompt": str(edited)}))
    with pytest.raises(ConfigError, match="my_prompt.yaml.*changed") as e:
        check_adapter(moved, "smollm2-135m", tax)
    assert e.value.context["field"] == "classify.prompt"


def _zero_shot_setup(embed_home, k_examples=0):
    from behavior_rag.classify import Classifier
    from behavior_rag.embed import get_embedder
    from behavior_rag.evaluation import purchase_intent, split_by_user
    from behavior_rag.index.faiss_index import FaissSessionIndex
    from behavior_rag.llm.local import LocalLLM
    from behavior_rag.settings import Settings
    from behavior_rag.synth import generate
    from behavior_rag.taxonomy import load_taxonomy

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"},
                 classify={"taxonomy": "purchase_intent", "k_examples": k_examples,
                           "query_max_tokens": 64})
    sp = split_by_user(purchase_intent(generate(120, seed=5).sessions, min_events=2), 5,
                       dev_frac=0.1, test_frac=0.1)
    emb = get_embedder(s)
    llm = LocalLLM("smollm2-135m", cache_root=embed_home / "models")
    clf = Classifier(FaissSessionIndex(emb.info, s.index), emb, llm,
                     load_taxonomy("purchase_intent"), settings=s)
    return llm, clf, sp


def test_zero_shot_prompts_skip_retrieval_and_stay_the_same(embed_home):
    llm, clf, sp = _zero_shot_setup(embed_home)
    with_search = clf.prepare(sp.train[:5])
    without = clf.prepare(sp.train[:5], retrieve=False)
    assert [p.messages for p in without] == [p.messages for p in with_search]
    assert all(not p.neighbors for p in without)  # nothing was searched
    _, clf1, _ = _zero_shot_setup(embed_home, k_examples=1)
    with pytest.raises(ConfigError, match="retrieval"):
        clf1.prepare(sp.train[:2], retrieve=False)


def test_validation_through_the_lora_layers_only_scores_as_the_backend(embed_home):
    """Validation keeps the lower layers' output once and reruns only the LoRA layers: after
    the adapter moves, its label scores must equal the backend's own, whole-model scores."""
    import torch
    from peft import LoraConfig, get_peft_model

    from behavior_rag.finetune.step import Examples, PrefixKV
    from behavior_rag.finetune.validate import ValScorer, slow_scores

    llm, clf, sp = _zero_shot_setup(embed_home)
    built = Examples(llm, clf, sp.train[:6])
    n = llm.model.config.num_hidden_layers
    model = get_peft_model(llm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj",
                                                                       "down_proj"],
                                                 layers_to_transform=[n - 2, n - 1]))
    pkv = PrefixKV(model, built.prefix, n - 2, llm.cache_kw)
    val = sp.dev[:4]
    scorer = ValScorer(llm, clf, val, pkv, model, batch=3)  # a padded batch of 3, then 1
    assert [len(b.idx) for b in scorer.batches] == [3, 1]
    own = scorer.batches[0].mask[:, 0, -1, pkv.n:].sum(-1)  # each row's unpadded length
    assert len(set(own.tolist())) > 1  # rows of different lengths: padding is exercised
    assert scorer.fast and scorer.base_scores.shape == (4, 2)
    llm.use_model(model)
    model.eval()
    with torch.no_grad():  # the batched whole-model pass scores as the backend does
        np.testing.assert_allclose(scorer.base_scores, slow_scores(llm, clf, val), atol=1e-3)
    model.train()
    with torch.no_grad():
        for name, w in model.named_parameters():
            if "lora_B" in name:
                w.add_(torch.randn_like(w) * 0.05)
    fast = scorer.scores(model)
    model.eval()
    llm.use_model(model)
    with torch.no_grad():
        whole = slow_scores(llm, clf, val)
    assert np.abs(fast - scorer.base_scores).max() > 1e-2  # the adapter moved the scores
    np.testing.assert_allclose(fast, whole, atol=1e-3)


def test_length_grouped_batches_cover_the_data_once_with_little_padding():
    from behavior_rag.finetune import length_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 260, size=1000).tolist()
    batches = length_batches(lengths, 8, np.random.default_rng(1))
    flat = [i for b in batches for i in b]
    assert len(batches) == 125 and all(len(b) == 8 for b in batches)
    assert sorted(flat) == list(range(1000))
    again = length_batches(lengths, 8, np.random.default_rng(1))
    assert again == batches  # seeded

    def padded(bs):  # tokens a left-padded batch computes
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    plain = length_batches(lengths, 8, np.random.default_rng(1), by_length=False)
    assert padded(batches) < 0.8 * padded(plain)
    assert padded(batches) < 1.05 * sum(lengths)


def test_cli_finetune_writes_an_adapter_that_classify_then_uses(tmp_path, embed_home):
    """As a user runs it: labelled sessions -> `behavior-rag finetune` -> `classify` with
    BEHAVIOR_RAG_LLM__ADAPTER, which picks up the adapter's prompt file from its card."""
    from behavior_rag.taxonomy import load_taxonomy
    from tests.conftest import cli_json

    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
           "BEHAVIOR_RAG_CLASSIFY__QUERY_MAX_TOKENS": "64"}
    cli_json(env, "synth", "--n", "120", "--seed", "8", "--out", str(tmp_path / "train"))
    cli_json(env, "synth", "--n", "10", "--seed", "9", "--out", str(tmp_path / "new"))
    out = tmp_path / "adapter"
    [res] = cli_json(env, "finetune", "--data", str(tmp_path / "train"), "--out", str(out),
                     "--max-steps", "2", "--batch-size", "2")
    assert res["steps"] == 2 and res["card"]["prompt"] == "classify_compact"
    assert res["card"]["taxonomy"] == "shopper-personas" and res["card"]["n_val"] > 0
    assert {"adapter_config.json", "adapter_model.safetensors", "model_card.json"} <= {
        p.name for p in out.iterdir()}
    cli_json(env, "index", "build", str(tmp_path / "train"), "--index", str(tmp_path / "ix"))
    preds = cli_json(env | {"BEHAVIOR_RAG_LLM__ADAPTER": str(out)}, "classify",
                     str(tmp_path / "new"), "--index", str(tmp_path / "ix"), "--limit", "3")
    assert len(preds) == 3 and all(p["label"] in load_taxonomy().names for p in preds)
