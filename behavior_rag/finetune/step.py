"""The training step of the LoRA fine-tune: prompt rows, the shared prefix, the loss.

Each example is inference's own prompt (token ids) plus the label's token ids. Every prompt
starts with the same static part (instructions + taxonomy); its KV cache is shared by the batch
and, below the LoRA layers, computed once per run (``PrefixKV``). The loss is cross-entropy on
the label tokens only, with logits only at those positions.

Example:
    >>> rows = Examples(llm, clf, sessions)                                  # doctest: +SKIP
    >>> loss = batch_loss(peft_model, rows.rows[:8], torch, pad_id,
    ...                    PrefixKV(peft_model, rows.prefix, 24, "cache"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager

from behavior_rag.types import Session


class Examples:
    """Prompt token ids + label token ids per training session (inference's own prompt)."""

    def __init__(self, llm, clf, sessions: Sequence[Session]) -> None:
        self.rows = []
        answer = clf.prompt.answer_prefix
        for p in clf.prepare(list(sessions), retrieve=bool(clf.settings.classify.k_examples)):
            text = llm.prompt_text(p.messages, answer)
            prompt_ids, label_ids = llm.split_tokens(text, p.session.label)
            self.rows.append((prompt_ids, label_ids))
        self.prefix = shared_prefix([r[0] for r in self.rows])


def shared_prefix(prompts):
    """The token prefix every prompt starts with (instructions + taxonomy), leaving each
    prompt at least one token of its own."""
    if not prompts:
        return prompts
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        diff = (p[:n] != first[:n]).nonzero()
        if len(diff):
            n = int(diff[0])
    return first[:max(n, 0)]


class PrefixKV:
    """The static prefix's KV cache, rebuilt each step for the LoRA layers only.

    Layers below the first LoRA layer carry no adapter, so their KV for the prefix never
    changes: it is computed once, together with the hidden state entering the first LoRA layer.
    Each step then runs only the LoRA layers over that hidden state (no gradient), which gives
    exactly the KV a whole forward pass would (tested) at a fraction of the cost: with LoRA on
    the top 6 of 30 layers the prefix costs a fifth of a forward pass per step instead of one.
    """

    def __init__(self, model, prefix, first: int, cache_kw: str) -> None:
        import torch
        from transformers import DynamicCache

        self.n, self.first, self.cache_kw = len(prefix), first, cache_kw
        was_training = model.training
        model.eval()
        with torch.no_grad():
            cache = DynamicCache(config=model.config)
            out = model(input_ids=prefix[None], use_cache=True, logits_to_keep=1,
                        output_hidden_states=True, **{cache_kw: cache})
        model.train(was_training)
        self.hidden = out.hidden_states[first]  # input of layer `first`
        self.lower = [(cache.layers[i].keys, cache.layers[i].values) for i in range(first)]

    def build(self, model, batch: int):
        """A cache holding the prefix under the adapter's current weights, for ``batch`` rows."""
        import torch
        from transformers import DynamicCache
        from transformers.masking_utils import create_causal_mask

        inner = model.get_base_model().model if hasattr(model, "get_base_model") \
            else model.model
        cache = DynamicCache(config=model.config)
        for i, (k, v) in enumerate(self.lower):
            cache.update(k, v, i)
        was_training = model.training
        model.eval()  # no dropout in the shared prefix: the same KV for every row
        with torch.no_grad():
            h = self.hidden
            pos = torch.arange(self.n)[None]
            mask = create_causal_mask(config=inner.config, inputs_embeds=h, attention_mask=None,
                                      cache=None, position_ids=pos)
            emb = inner.rotary_emb(h, position_ids=pos)
            for layer in inner.layers[self.first: inner.config.num_hidden_layers]:
                h = layer(h, attention_mask=mask, position_embeddings=emb, position_ids=pos,
                          **{self.cache_kw: cache}, use_cache=True)
        model.train(was_training)
        cache.batch_repeat_interleave(batch)
        return cache


@contextmanager
def gqa_sdpa():
    """Let transformers' SDPA attention read grouped-query KV heads as they are
    (``enable_gqa``) when a mask is passed too. Without it, a padded batch copies every
    layer's keys and values once per query head group (``repeat_kv``: 3x for SmolLM2, over the
    prefix of every row); with it the same kernel reads them in place, with the same output
    (the saving is in eval/reports/bench_finetune_synth.md's history)."""
    key, old = "TRANSFORMERS_SDPA_FORCE_GQA", os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def batch_loss(model, rows, torch, pad_id: int, prefix_kv: PrefixKV | None = None):
    """Mean cross-entropy over the label tokens of ``rows`` (left-padded batch).

    ``prefix_kv``: the static prompt prefix all rows share, as a ``PrefixKV``. Its KV cache is
    rebuilt each step under the current adapter without gradient and reused by every row, so
    only the tokens after it are trained through (inference runs the same prefix through the
    same adapter; the adapter just gets no gradient from the prefix positions). The loss is the
    whole prompts' loss (tested)."""
    n_pre = prefix_kv.n if prefix_kv is not None else 0
    extra: dict = {}
    if prefix_kv is not None:
        extra = {prefix_kv.cache_kw: prefix_kv.build(model, len(rows)), "use_cache": True}
    seqs = [torch.cat([p[n_pre:], lab]) for p, lab in rows]
    n = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, n - len(x):] = x
        mask[i, n - len(x):] = 1
    keep = max(len(lab) for _, lab in rows) + 1
    pos = n_pre + (torch.cumsum(mask, 1) - 1).clamp(min=0)
    full_mask = torch.cat([torch.ones((len(seqs), n_pre), dtype=torch.long), mask], 1)
    out = model(input_ids=ids, attention_mask=full_mask, position_ids=pos,
                logits_to_keep=keep, **extra)
    logits = out.logits.float()  # [B, keep, V]: predictions for the last `keep` positions
    losses = []
    for i, (_, lab) in enumerate(rows):
        m = len(lab)
        # logits at position t predict token t+1: the label's m tokens are predicted by the
        # m positions just before the end.
        pred = logits[i, keep - 1 - m: keep - 1]
        losses.append(torch.nn.functional.cross_entropy(pred, lab, reduction="mean"))
    return torch.stack(losses).mean()
