"""LoRA fine-tune of the local model on labelled sessions (cross-entropy on the label tokens).

Training examples use the *same* prompt as inference: the few-shot neighbours are retrieved
from an index of the training sessions, never the example itself or its user. The loss is
cross-entropy on the label's tokens only, and logits are computed only at those positions
(``logits_to_keep`` with left padding: the label always ends the sequence).

Validation is split by user (a seeded sample of ``val_max`` sessions); training stops early
when validation macro-F1 (the adapter's label scores, arg-max) stops improving, the gold label's
log-loss breaking ties (a rare class left unpredicted keeps macro-F1 flat for long). The
validation pass reruns only the LoRA layers over the lower layers' output kept from step 0
(:mod:`behavior_rag.finetune.validate`). Output: a PEFT adapter folder (``adapter_config.json``
+ safetensors) and ``model_card.json`` (:class:`~behavior_rag.finetune.config.FinetuneCard`),
committed with :func:`behavior_rag.atomic.replace_dir`.

What keeps a CPU step cheap: the static prefix is shared by the batch, its KV below the LoRA
layers computed once per run and only rerun through the LoRA layers each step, without gradient
(:mod:`behavior_rag.finetune.step`); logits only at the label positions; LoRA only on the top
layers, so autograd stops there; batches of similar length; no dropout masks; a compact training
prompt (``prompts/classify_compact.yaml``). The measured costs of each choice and the wall time
for 1,000 examples are in ``eval/reports/bench_finetune*.md``.

Example:
    >>> res = finetune(train, val, taxonomy, out="adapters/personas")         # doctest: +SKIP
    >>> LocalLLM("smollm2-135m", adapter="adapters/personas")               # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from behavior_rag.atomic import replace_dir
from behavior_rag.classify import Classifier
from behavior_rag.embed import get_embedder
from behavior_rag.errors import ConfigError
from behavior_rag.finetune.config import Evaluation, FinetuneCard, FinetuneConfig, FinetuneResult
from behavior_rag.finetune.step import Examples, PrefixKV, batch_loss, gqa_sdpa
from behavior_rag.finetune.validate import ValScorer, slow_scores, val_metrics
from behavior_rag.index.build import upsert_sessions
from behavior_rag.index.factory import create_index
from behavior_rag.llm.adapter import CARD, data_hash
from behavior_rag.llm.local import LocalLLM
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Session


def length_batches(lengths: Sequence[int], size: int, rng, group: int = 50,
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


def finetune(train: Sequence[Session], val: Sequence[Session], taxonomy: Taxonomy, *,
             out: str | Path, model: str | None = None, config: FinetuneConfig | None = None,
             settings: Settings | None = None,
             progress: Callable[[int, int, float], None] | None = None) -> FinetuneResult:
    """Train a LoRA adapter on labelled ``train`` sessions; early-stop on ``val`` macro-F1."""
    import resource

    import torch
    from peft import LoraConfig, get_peft_model

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
    index = create_index(emb.info, settings.index)
    if cfg.k_examples:  # a zero-shot prompt retrieves nothing: no index to build
        upsert_sessions(index, emb, list(train), settings=settings, split="train")
    llm = LocalLLM(model, cache_root=settings.home / "models", threads=settings.llm.threads)
    settings = settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"k_examples": cfg.k_examples, "prompt": cfg.prompt})})
    clf = Classifier(index, emb, llm, taxonomy, settings=settings)
    pick = sorted(rng.choice(len(train), size=min(cfg.max_examples, len(train)),
                             replace=False).tolist())
    built = Examples(llm, clf, [train[i] for i in pick])
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
    prefix_kv = PrefixKV(peft_model, prefix, top[0] if top else 0, llm.cache_kw) \
        if prefix is not None and len(prefix) else None
    pad = llm.tok.pad_token_id if llm.tok.pad_token_id is not None else llm.tok.eos_token_id
    history: list[Evaluation] = []
    train_secs = val_secs = 0.0
    t_val = time.perf_counter()
    llm.use_model(peft_model)
    scorer = None
    if prefix_kv is not None:
        try:
            with gqa_sdpa():
                scorer = ValScorer(llm, clf, val, prefix_kv, peft_model)
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
            llm.reset_cache()
            with torch.no_grad():
                scores = slow_scores(llm, clf, val)
            peft_model.train()
        val_secs += time.perf_counter() - t_val
        return val_metrics(scores, [s.label for s in val], clf.labels)

    best_f1, best_ll = evaluate(first=True)
    history.append(Evaluation(step=0, val_macro_f1=best_f1, val_log_loss=best_ll))
    best_state = {k: v.detach().clone() for k, v in peft_model.state_dict().items()
                  if "lora_" in k}
    lengths = [len(p) + len(lab) for p, lab in examples]
    batches: list[list[int]] = []
    step = bad_evals = best_step = 0
    while step < cfg.max_steps:
        if not batches:
            batches = length_batches(lengths, cfg.batch_size, rng,
                                      by_length=cfg.group_by_length)
        rows = [examples[i] for i in batches.pop()]
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16), gqa_sdpa():
            loss = batch_loss(peft_model, rows, torch, pad, prefix_kv)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_secs += time.perf_counter() - t
        step += 1
        if progress:
            progress(step, cfg.max_steps, loss.item())
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            f1, ll = evaluate()
            history.append(Evaluation(step=step, loss=loss.item(), val_macro_f1=f1,
                                      val_log_loss=ll))
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
    card = FinetuneCard(base_model=model, taxonomy=taxonomy.name,
                     taxonomy_hash=taxonomy.content_hash,
                     data_hash=data_hash(train), n_train=len(train), n_val=len(val),
                     k_examples=cfg.k_examples, prompt=cfg.prompt,
                     prompt_hash=clf.prompt.content_hash, config=cfg,
                     metrics={"val_macro_f1_base": history[0].val_macro_f1,
                              "val_macro_f1_best": best_f1,
                              "val_log_loss_base": history[0].val_log_loss,
                              "val_log_loss_best": best_ll, "steps": step,
                              "best_step": best_step},
                     date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out = Path(out)
    with replace_dir(out) as tmp:  # the old adapter stays until the new one is complete
        peft_model.save_pretrained(str(tmp))
        (tmp / CARD).write_text(card.model_dump_json(indent=1))
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
