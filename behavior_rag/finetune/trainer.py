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

    cfg = config or FinetuneConfig()
    settings = settings or default_settings()
    model = model or settings.llm.model
    bad = [s.session_id for s in [*train, *val] if s.label not in taxonomy]
    if bad:
        raise ConfigError(f"{len(bad)} sessions have no label of taxonomy {taxonomy.name!r}, "
                          f"e.g. {bad[0]}", field="label", value=bad[0])
    t0 = time.perf_counter()
    run = _Run(train, val, taxonomy, model, cfg, settings)
    run.train(progress)
    card = run.card(train)
    out = Path(out)
    with replace_dir(out) as tmp:  # the old adapter stays until the new one is complete
        run.peft_model.save_pretrained(str(tmp))
        (tmp / CARD).write_text(card.model_dump_json(indent=1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = time.perf_counter() - t0
    lengths = run.lengths
    return FinetuneResult(
        adapter=str(out), card=card, seconds=total,
        sec_per_step=run.train_secs / max(run.step, 1), peak_rss_mb=peak, steps=run.step,
        n_examples=len(run.examples), history=run.history,
        prompt_tokens=round(float(np.mean(lengths)), 1) if lengths else 0.0,
        prefix_tokens=len(run.prefix) if run.prefix_kv is not None else 0,
        validation="lora-layers" if run.scorer is not None else "whole-model",
        phase_seconds={"train": round(run.train_secs, 1), "validate": round(run.val_secs, 1),
                       "prepare_and_save": round(total - run.train_secs - run.val_secs, 1)})


class _Run:
    """One fine-tune: training prompts, the PEFT model, validation and the early-stop loop."""

    def __init__(self, train: Sequence[Session], val: Sequence[Session], taxonomy: Taxonomy,
                 model: str, cfg: FinetuneConfig, settings: Settings) -> None:
        import torch

        torch.manual_seed(cfg.seed)
        self.torch, self.cfg, self.model, self.taxonomy = torch, cfg, model, taxonomy
        self.rng = np.random.default_rng(cfg.seed)
        self.llm, self.clf = self._classifier(train, settings)
        pick = sorted(self.rng.choice(len(train), size=min(cfg.max_examples, len(train)),
                                      replace=False).tolist())
        built = Examples(self.llm, self.clf, [train[i] for i in pick])
        self.examples = built.rows
        self.lengths = [len(p) + len(lab) for p, lab in self.examples]
        # Sliding-window layers (Gemma 3) keep only their window in the cache, so a prefix
        # longer than the window cannot be shared; those models train on whole prompts.
        window = getattr(self.llm.model.config, "sliding_window", None)
        self.prefix = built.prefix if cfg.share_prefix and not (
            window and len(built.prefix) > window) else None
        val = list(val)
        if len(val) > cfg.val_max:  # a seeded sample: the split's order follows users
            val = [val[i] for i in sorted(self.rng.choice(len(val), cfg.val_max,
                                                          replace=False))]
        self.val = val
        self._wrap()
        self.history: list[Evaluation] = []
        self.train_secs = self.val_secs = 0.0
        self.step = self.best_step = 0
        self._t_val = time.perf_counter()  # the first evaluation includes the scorer's setup
        self.llm.use_model(self.peft_model)
        self.scorer = self._scorer()

    def _classifier(self, train: Sequence[Session], settings: Settings
                    ) -> tuple[LocalLLM, Classifier]:
        emb = get_embedder(settings)
        index = create_index(emb.info, settings.index)
        if self.cfg.k_examples:  # a zero-shot prompt retrieves nothing: no index to build
            upsert_sessions(index, emb, list(train), settings=settings, split="train")
        llm = LocalLLM(self.model, cache_root=settings.home / "models",
                       threads=settings.llm.threads)
        settings = settings.model_copy(update={"classify": settings.classify.model_copy(
            update={"k_examples": self.cfg.k_examples, "prompt": self.cfg.prompt})})
        return llm, Classifier(index, emb, llm, self.taxonomy, settings=settings)

    def _wrap(self) -> None:
        """LoRA on the top layers, its optimiser, and the shared prefix's KV below them."""
        from peft import LoraConfig, get_peft_model

        cfg, base = self.cfg, self.llm.model
        base.train()
        n_layers = base.config.num_hidden_layers
        top = None if cfg.top_layers is None else \
            list(range(max(0, n_layers - cfg.top_layers), n_layers))
        self.peft_model = get_peft_model(base, LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules, layers_to_transform=top, task_type="CAUSAL_LM"))
        self.opt = self.torch.optim.AdamW(
            [p for p in self.peft_model.parameters() if p.requires_grad], lr=cfg.lr)
        # the prefix's KV below the LoRA layers is computed once for the whole run
        self.prefix_kv = PrefixKV(self.peft_model, self.prefix, top[0] if top else 0,
                                  self.llm.cache_kw) \
            if self.prefix is not None and len(self.prefix) else None
        tok = self.llm.tok
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _scorer(self) -> ValScorer | None:
        """Validation through the LoRA layers only, where this model allows it."""
        if self.prefix_kv is None:
            return None
        try:
            with gqa_sdpa():
                scorer = ValScorer(self.llm, self.clf, self.val, self.prefix_kv,
                                   self.peft_model)
        except ValueError:  # a validation prompt outside the shared prefix
            return None
        return scorer if scorer.fast else None  # else: score through the backend

    def evaluate(self, first: bool = False) -> tuple[float, float]:
        """Validation macro-F1 and gold-label log-loss of the adapter as it is now."""
        t_val = self._t_val if first else time.perf_counter()
        if first and self.scorer is not None:
            scores = self.scorer.base_scores  # computed while keeping the lower layers' output
        elif self.scorer is not None:
            with gqa_sdpa():
                scores = self.scorer.scores(self.peft_model)
        else:
            self.peft_model.eval()
            self.llm.reset_cache()
            with self.torch.no_grad():
                scores = slow_scores(self.llm, self.clf, self.val)
            self.peft_model.train()
        self.val_secs += time.perf_counter() - t_val
        return val_metrics(scores, [s.label for s in self.val], self.clf.labels)

    def _lora_state(self) -> dict:
        return {k: v.detach().clone() for k, v in self.peft_model.state_dict().items()
                if "lora_" in k}

    def _step(self, rows) -> float:
        torch, t = self.torch, time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16), gqa_sdpa():
            loss = batch_loss(self.peft_model, rows, torch, self.pad, self.prefix_kv)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.train_secs += time.perf_counter() - t
        self.step += 1
        return loss.item()

    def train(self, progress: Callable[[int, int, float], None] | None) -> None:
        """Train until ``max_steps`` or ``patience`` evaluations without improvement; keep the
        best evaluation's adapter weights."""
        cfg = self.cfg
        self.best_f1, self.best_ll = self.evaluate(first=True)
        self.history.append(Evaluation(step=0, val_macro_f1=self.best_f1,
                                       val_log_loss=self.best_ll))
        best_state, batches, bad_evals = self._lora_state(), [], 0
        while self.step < cfg.max_steps:
            if not batches:
                batches = length_batches(self.lengths, cfg.batch_size, self.rng,
                                         by_length=cfg.group_by_length)
            loss = self._step([self.examples[i] for i in batches.pop()])
            if progress:
                progress(self.step, cfg.max_steps, loss)
            if self.step % cfg.eval_every and self.step != cfg.max_steps:
                continue
            f1, ll = self.evaluate()
            self.history.append(Evaluation(step=self.step, loss=loss, val_macro_f1=f1,
                                           val_log_loss=ll))
            # macro-F1 first; on a tie (a rare class never predicted leaves it flat for long)
            # the validation log-loss of the gold label decides
            if f1 > self.best_f1 + 1e-9 or (f1 > self.best_f1 - 1e-9 and ll < self.best_ll - 1e-6):
                self.best_f1, self.best_ll, bad_evals, self.best_step = f1, ll, 0, self.step
                best_state = self._lora_state()
            else:
                bad_evals += 1
                if bad_evals >= cfg.patience:
                    break
        self.peft_model.load_state_dict(best_state, strict=False)

    def card(self, train: Sequence[Session]) -> FinetuneCard:
        first, tax = self.history[0], self.taxonomy
        return FinetuneCard(
            base_model=self.model, taxonomy=tax.name, taxonomy_hash=tax.content_hash,
            data_hash=data_hash(train), n_train=len(train), n_val=len(self.val),
            k_examples=self.cfg.k_examples, prompt=self.cfg.prompt,
            prompt_hash=self.clf.prompt.content_hash, config=self.cfg,
            metrics={"val_macro_f1_base": first.val_macro_f1, "val_macro_f1_best": self.best_f1,
                     "val_log_loss_base": first.val_log_loss, "val_log_loss_best": self.best_ll,
                     "steps": self.step, "best_step": self.best_step},
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
