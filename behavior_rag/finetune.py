"""LoRA fine-tune of the local model on labelled sessions (cross-entropy on the label tokens).

Training examples use the *same* prompt as inference: the few-shot neighbours are retrieved
from an index of the training sessions, never the example itself or its user. The loss is
cross-entropy on the label's tokens only, and logits are computed only at those positions
(``logits_to_keep`` with left padding: the label always ends the sequence) — the full
vocabulary projection over ~1,400 prompt tokens would dominate the step otherwise.

Validation is split by user (a seeded sample of ``val_max`` sessions); training stops early
when validation macro-F1 (the adapter's label scores, arg-max) stops improving, the gold label's
log-loss breaking ties (a rare class left unpredicted keeps macro-F1 flat for long). The
validation pass reruns only the LoRA layers over the lower layers' output kept from step 0
(``finetune_val``). Output: a PEFT adapter folder (``adapter_config.json`` + safetensors) and
``model_card.json`` (base model, taxonomy hash, data hash, metrics, date), written to a temp
folder and renamed into place.

Defaults: r=16, alpha=32, no dropout, attention + MLP projections of the top 6 layers, lr 5e-4,
batch 8, 125 steps (one pass over at most 1,000 sampled training sessions), a zero-shot training
prompt (``k_examples=0``) from ``prompts/classify_compact.yaml`` (one short line per label
instead of descriptions + signals: persona prompts ~470 tokens instead of ~980); the card makes
inference use the same prompt file and few-shot count. What keeps a CPU step cheap
(measured on the shared 2-core box): the static prefix is shared by the batch, its KV below the
LoRA layers computed once per run and only rerun through the LoRA layers each step, without
gradient (``finetune_step``); logits only at the label positions; LoRA only on the top layers,
so autograd stops there (persona prompts, batch 8: 13.6 s/step with LoRA on all 30 layers, 6.8 s
on the top 8, 5.3 s on the top 4); batches of similar length (Taobao prompts vary 2x in length,
and a left-padded batch costs its longest row); no dropout masks (13% of a step). bf16 autocast
is off by default: this CPU has no AVX512-BF16/AMX and bf16 steps measured 2.4x slower.
``eval/reports/bench_finetune.md`` has the measured wall time for 1,000 examples.

Example:
    >>> res = finetune(train, val, taxonomy, out="adapters/personas")         # doctest: +SKIP
    >>> LocalLLM("smollm2-135m", adapter="adapters/personas")               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError
from behavior_rag.finetune_step import _batch_loss, _Examples, _PrefixKV, gqa_sdpa
from behavior_rag.finetune_val import _ValScorer, slow_scores, val_metrics
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Session

CARD = "model_card.json"


class FinetuneConfig(BaseModel):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout. 0 by default: one pass "
                           "over the data hardly overfits, and on CPU the dropout masks "
                           "(aten::bernoulli_) took 13% of a step in a profile.")
    target_modules: list[str] = Field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    top_layers: int | None = Field(6, ge=1, description="LoRA on the top N decoder layers "
                                   "only (None: all). Autograd then stops below them, so the "
                                   "backward pass and its activations shrink with N: measured "
                                   "13.6 s/step (all 30 layers, 8.5 GB peak) vs 6.8 (top 8) vs "
                                   "5.3 (top 4, 3.5 GB) at batch 8 on persona prompts.")
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(125, ge=1, description="125 x batch 8: one pass over 1,000.")
    eval_every: int = Field(25, ge=1)
    patience: int = Field(2, ge=1, description="Evaluations without improvement before stop.")
    val_max: int = Field(60, ge=1, description="Validation sessions scored per evaluation.")
    max_examples: int = Field(1000, ge=1, description="Training sessions used (seeded sample): "
                              "bounds the prompt-building cost on big labelled sets.")
    k_examples: int = Field(0, ge=0, description="Few-shot neighbours in the training prompt. "
                            "The adapter is then used with the same number (its model card "
                            "sets classify.k_examples), so training and inference prompts stay "
                            "identical. 0 by default: on CPU the step cost follows the tokens "
                            "after the shared static prefix, and neighbours triple them.")
    prompt: str = Field("classify_compact", description="Prompt file (name under prompts/ or a "
                        "path) of the training prompt; the model card records it and inference "
                        "with the adapter uses it. classify_compact: the classify prompt with "
                        "one short line per label instead of descriptions + signals — the "
                        "adapter learns the labels from data, and the step cost grows with the "
                        "prompt (personas: ~250 tokens instead of ~770).")
    bf16: bool = Field(False, description="bf16 autocast for forward/backward. Off by default: "
                       "on this CPU (no AVX512-BF16/AMX) a step measured 2.4x slower in bf16.")
    group_by_length: bool = Field(True, description="Batch prompts of similar length "
                                  "(sorted within seeded groups of 50 batches, batches "
                                  "shuffled), as transformers' Trainer does: a left-padded batch "
                                  "costs its longest row times its size.")
    share_prefix: bool = Field(True, description="Share the static prompt prefix's KV across "
                               "the batch (below the LoRA layers once per run, through them "
                               "once per step, no gradient: finetune_step._PrefixKV).")
    seed: int = 0


class ModelCard(BaseModel):
    base_model: str
    taxonomy: str
    taxonomy_hash: str
    data_hash: str
    n_train: int
    n_val: int
    k_examples: int | None = Field(None, description="Few-shot neighbours the adapter was "
                                   "trained (and must be used) with; None: cards before it.")
    prompt: str | None = Field(None, description="Prompt file the adapter was trained (and "
                               "must be used) with; None: cards before it (classify).")
    prompt_hash: str | None = Field(None, description="PromptFile.content_hash of it: an "
                                    "edited prompt is refused.")
    config: FinetuneConfig
    metrics: dict[str, float | int | list | None]
    date: str


def data_hash(sessions: Sequence[Session]) -> str:
    h = hashlib.sha256()
    for s in sorted(sessions, key=lambda x: x.session_id):
        h.update(f"{s.session_id}\t{s.label}\t{s.n_events}\n".encode())
    return h.hexdigest()[:16]


def read_card(adapter: str | Path) -> ModelCard:
    path = Path(adapter) / CARD
    if not path.exists():
        raise ConfigError(f"{path} missing: not an adapter written by behavior-rag finetune",
                          file=str(path))
    return ModelCard.model_validate_json(path.read_text())


def check_adapter(adapter: str | Path, base_model: str, taxonomy: Taxonomy) -> ModelCard:
    """Refuse an adapter trained for another base model or taxonomy."""
    card = read_card(adapter)
    if card.base_model != base_model:
        raise ConfigError(f"adapter {adapter} was trained on {card.base_model!r}, the running "
                          f"model is {base_model!r}", field="llm.adapter", value=str(adapter))
    if card.taxonomy_hash != taxonomy.content_hash:
        raise ConfigError(f"adapter {adapter} was trained for taxonomy {card.taxonomy!r} "
                          f"(hash {card.taxonomy_hash}), the running taxonomy is "
                          f"{taxonomy.name!r} (hash {taxonomy.content_hash})",
                          field="llm.adapter", value=str(adapter))
    if card.prompt_hash is not None:
        from behavior_rag.prompts import load_prompt

        now = load_prompt(card.prompt).content_hash
        if now != card.prompt_hash:
            raise ConfigError(f"adapter {adapter} was trained with prompt {card.prompt!r} "
                              f"(hash {card.prompt_hash}); that prompt file has changed since "
                              f"(hash {now}): retrain the adapter", field="classify.prompt",
                              value=card.prompt)
    return card


def _length_batches(lengths: Sequence[int], size: int, rng, group: int = 50,
                    by_length: bool = True) -> list[list[int]]:
    """One pass over the examples in batches of ``size``: a seeded shuffle, cut into groups of
    ``group`` batches, each group sorted by length before it is cut into batches, then the
    batches shuffled (so long and short batches alternate)."""
    order = rng.permutation(len(lengths)).tolist()
    if by_length:
        span = size * group
        order = [i for g in range(0, len(order), span)
                 for i in sorted(order[g: g + span], key=lambda j: -lengths[j])]
    batches = [order[i: i + size] for i in range(0, len(order) - size + 1, size)] or [order]
    return [batches[i] for i in rng.permutation(len(batches))] if by_length else batches


class FinetuneResult(BaseModel):
    adapter: str
    card: ModelCard
    seconds: float
    sec_per_step: float
    peak_rss_mb: float
    steps: int
    n_examples: int = Field(0, description="Training examples built (at most max_examples).")
    history: list[dict]
    phase_seconds: dict[str, float] = Field(default_factory=dict, description="Where the time "
                                            "went: prepare (index, prompts), train, validate.")
    prompt_tokens: float = Field(0.0, description="Mean tokens per training example (prompt + "
                                 "label): the step cost follows them.")
    prefix_tokens: int = Field(0, description="Leading tokens every prompt shares (computed "
                               "once, not per example).")
    validation: str = Field("whole-model", description="'lora-layers': evaluations reran only "
                            "the LoRA layers (finetune_val); 'whole-model': the backend "
                            "scored every validation prompt in full.")


def finetune(train: Sequence[Session], val: Sequence[Session], taxonomy: Taxonomy, *,
             out: str | Path, model: str | None = None, config: FinetuneConfig | None = None,
             settings: Settings | None = None,
             progress: Callable[[int, int, float], None] | None = None) -> FinetuneResult:
    """Train a LoRA adapter on labelled ``train`` sessions; early-stop on ``val`` macro-F1."""
    import resource

    import torch
    from peft import LoraConfig, get_peft_model

    from behavior_rag.classify import Classifier
    from behavior_rag.embed import get_embedder
    from behavior_rag.index.build import upsert_sessions
    from behavior_rag.index.faiss_index import FaissSessionIndex
    from behavior_rag.llm.local import LocalLLM

    cfg = config or FinetuneConfig()
    settings = settings or default_settings()
    model = model or settings.llm.model
    bad = [s.session_id for s in [*train, *val] if s.label not in taxonomy]
    if bad:
        raise ConfigError(f"{len(bad)} sessions have no label of taxonomy {taxonomy.name!r}, "
                          f"e.g. {bad[0]}", field="label", value=bad[0])
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    emb = get_embedder(settings)
    index = FaissSessionIndex(emb.info, settings.index)
    if cfg.k_examples:  # a zero-shot prompt retrieves nothing: no index to build
        upsert_sessions(index, emb, list(train), settings=settings, split="train")
    llm = LocalLLM(model, cache_root=settings.home / "models", threads=settings.llm.threads)
    settings = settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"k_examples": cfg.k_examples, "prompt": cfg.prompt})})
    clf = Classifier(index, emb, llm, taxonomy, settings=settings)
    pick = sorted(rng.choice(len(train), size=min(cfg.max_examples, len(train)),
                             replace=False).tolist())
    built = _Examples(llm, clf, [train[i] for i in pick])
    examples = built.rows
    # Sliding-window layers (Gemma 3) keep only their window in the cache, so a prefix longer
    # than the window cannot be shared; those models train on whole prompts.
    window = getattr(llm.model.config, "sliding_window", None)
    prefix = built.prefix if cfg.share_prefix and not (window and len(built.prefix) > window) \
        else None
    val = list(val)
    if len(val) > cfg.val_max:  # a seeded sample: the split's order follows users
        val = [val[i] for i in sorted(rng.choice(len(val), cfg.val_max, replace=False))]
    base = llm.model
    base.train()
    n_layers = base.config.num_hidden_layers
    top = None if cfg.top_layers is None else \
        list(range(max(0, n_layers - cfg.top_layers), n_layers))
    peft_model = get_peft_model(base, LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, layers_to_transform=top, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.lr)
    # the prefix's KV below the LoRA layers is computed once for the whole run
    prefix_kv = _PrefixKV(peft_model, prefix, top[0] if top else 0, llm._cache_kw) \
        if prefix is not None and len(prefix) else None
    pad = llm.tok.pad_token_id if llm.tok.pad_token_id is not None else llm.tok.eos_token_id
    history: list[dict] = []
    train_secs = val_secs = 0.0
    t_val = time.perf_counter()
    llm.model, llm._last = peft_model, None
    scorer = None
    if prefix_kv is not None:
        try:
            with gqa_sdpa():
                scorer = _ValScorer(llm, clf, val, prefix_kv, peft_model)
        except ValueError:  # a validation prompt outside the shared prefix
            scorer = None
    if scorer is not None and not scorer.fast:
        scorer = None  # this model's layers are not covered: score through the backend

    def evaluate(first: bool = False) -> tuple[float, float]:
        nonlocal val_secs, t_val
        t_val = t_val if first else time.perf_counter()
        if first and scorer is not None:
            scores = scorer.base_scores  # computed while keeping the lower layers' output
        elif scorer is not None:
            with gqa_sdpa():
                scores = scorer.scores(peft_model)
        else:
            peft_model.eval()
            llm._last = None
            with torch.no_grad():
                scores = slow_scores(llm, clf, val)
            peft_model.train()
        val_secs += time.perf_counter() - t_val
        return val_metrics(scores, [s.label for s in val], clf.labels)

    best_f1, best_ll = evaluate(first=True)
    history.append({"step": 0, "val_macro_f1": best_f1, "val_log_loss": best_ll})
    best_state = {k: v.detach().clone() for k, v in peft_model.state_dict().items()
                  if "lora_" in k}
    lengths = [len(p) + len(lab) for p, lab in examples]
    batches: list[list[int]] = []
    step = bad_evals = best_step = 0
    while step < cfg.max_steps:
        if not batches:
            batches = _length_batches(lengths, cfg.batch_size, rng,
                                      by_length=cfg.group_by_length)
        rows = [examples[i] for i in batches.pop()]
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16), gqa_sdpa():
            loss = _batch_loss(peft_model, rows, torch, pad, prefix_kv)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_secs += time.perf_counter() - t
        step += 1
        if progress:
            progress(step, cfg.max_steps, loss.item())
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            f1, ll = evaluate()
            history.append({"step": step, "loss": loss.item(), "val_macro_f1": f1,
                            "val_log_loss": ll})
            # macro-F1 first; on a tie (a rare class never predicted leaves it flat for long)
            # the validation log-loss of the gold label decides
            if f1 > best_f1 + 1e-9 or (f1 > best_f1 - 1e-9 and ll < best_ll - 1e-6):
                best_f1, best_ll, bad_evals, best_step = f1, ll, 0, step
                best_state = {k: v.detach().clone() for k, v in peft_model.state_dict().items()
                              if "lora_" in k}
            else:
                bad_evals += 1
                if bad_evals >= cfg.patience:
                    break
    peft_model.load_state_dict(best_state, strict=False)
    card = ModelCard(base_model=model, taxonomy=taxonomy.name,
                     taxonomy_hash=taxonomy.content_hash,
                     data_hash=data_hash(train), n_train=len(train), n_val=len(val),
                     k_examples=cfg.k_examples, prompt=cfg.prompt,
                     prompt_hash=clf.prompt.content_hash, config=cfg,
                     metrics={"val_macro_f1_base": history[0]["val_macro_f1"],
                              "val_macro_f1_best": best_f1,
                              "val_log_loss_base": history[0]["val_log_loss"],
                              "val_log_loss_best": best_ll, "steps": step,
                              "best_step": best_step},
                     date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        peft_model.save_pretrained(str(tmp))
        (tmp / CARD).write_text(card.model_dump_json(indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = time.perf_counter() - t0
    return FinetuneResult(adapter=str(out), card=card, seconds=total,
                          sec_per_step=train_secs / max(step, 1), peak_rss_mb=peak, steps=step,
                          n_examples=len(examples), history=history,
                          prompt_tokens=round(float(np.mean(lengths)), 1) if lengths else 0.0,
                          prefix_tokens=len(prefix) if prefix_kv is not None else 0,
                          validation="lora-layers" if scorer is not None else "whole-model",
                          phase_seconds={"train": round(train_secs, 1),
                                         "validate": round(val_secs, 1),
                                         "prepare_and_save": round(total - train_secs - val_secs,
                                                                   1)})


def card_json(res: FinetuneResult) -> str:
    return json.dumps(res.model_dump(mode="json"), indent=1)
