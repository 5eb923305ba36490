"""Validation during the LoRA fine-tune: label scores, macro-F1 and log-loss, cheaply.

The layers below the adapter never change during training, so neither does their output for a
validation prompt. ``ValScorer`` runs the whole model once over the validation sessions (the
step-0 evaluation), keeps the hidden state entering the first LoRA layer for the prompts' own
tokens and for the label tokens, and each later evaluation runs only the LoRA layers over it
(top 6 of 30 layers: a fifth of the work). Rows go in batches of similar length (left-padded,
4-D masks): one row at a time, the small matmuls ran at half the throughput (synth bench:
validation 143 s of a 14.4-min run). The scores are the ones ``LocalLLM.score_options`` gives
(same tokens, same packed label layout): a self-check on the first batch compares the two
paths and falls back to the whole model if they disagree (a model whose layers take other
inputs).

Example:
    >>> scorer = ValScorer(llm, clf, val, prefix_kv, peft_model)            # doctest: +SKIP
    >>> f1, log_loss = val_metrics(scorer.scores(peft_model), gold, labels)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from behavior_rag.llm.local import packed_options
from behavior_rag.types import Session

TOL = 1e-3  # nats: float32 reorderings stay far below this, a wrong layer input far above


def val_metrics(scores: np.ndarray, gold: Sequence[str], labels: Sequence[str]
                ) -> tuple[float, float]:
    """Macro-F1 of the arg-max label and log-loss of the gold label (softmax over labels)."""
    from sklearn.metrics import f1_score

    preds = [labels[i] for i in scores.argmax(1)]
    f1 = float(f1_score(list(gold), preds, labels=list(labels), average="macro",
                        zero_division=0))
    z = scores - scores.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    idx = [list(labels).index(g) for g in gold]
    return f1, float(-logp[np.arange(len(idx)), idx].mean())

def slow_scores(llm, clf, val: Sequence[Session]) -> np.ndarray:
    """Label scores through the backend itself (models the fast path does not cover)."""
    preps = clf.prepare(list(val), retrieve=bool(clf.settings.classify.k_examples))
    return np.array([llm.score_options(p.messages, clf.labels,
                                       answer_prefix=clf.prompt.answer_prefix) for p in preps])

class _Batch:
    """Validation rows scored together: left-padded prompt suffixes, then every label's tokens
    packed after each row's own prompt (``packed_options``), with masks and positions."""

    __slots__ = ("idx", "opt_ids", "ids", "pos", "mask", "packed", "pos_opt", "mask_opt",
                 "h_suffix", "h_opt")

def _make_batch(idx, suffixes, opt_ids, n_pre: int, pad_id: int) -> _Batch:
    import torch

    b = _Batch()
    b.idx, b.opt_ids, b.h_suffix, b.h_opt = idx, opt_ids, None, None
    rows, L = len(suffixes), max(len(x) for x in suffixes)
    b.ids = torch.full((rows, L), pad_id, dtype=torch.long)
    valid = torch.zeros((rows, L), dtype=torch.bool)
    for i, x in enumerate(suffixes):
        b.ids[i, L - len(x):], valid[i, L - len(x):] = x, True
    # positions continue the prefix; padding sits at the first position (masked anyway)
    b.pos = n_pre + (torch.cumsum(valid.long(), 1) - 1).clamp(min=0)
    b.mask = torch.ones((rows, 1, L, n_pre + L), dtype=torch.bool)
    b.mask[:, 0, :, n_pre:] = torch.tril(torch.ones(L, L, dtype=torch.bool)) & valid[:, None, :]
    packed = packed_options(opt_ids, 0)
    b.packed = None
    if packed is not None:
        tokens, block, rel = packed  # rel: positions from 0; block: [t, t] among the labels
        t = len(tokens)
        b.packed = tokens[None].expand(rows, t)
        b.pos_opt = b.pos[:, -1:] + 1 + rel[None]
        b.mask_opt = torch.ones((rows, 1, t, n_pre + L + t), dtype=torch.bool)
        b.mask_opt[:, 0, :, n_pre: n_pre + L] = valid[:, None, :]
        b.mask_opt[:, 0, :, n_pre + L:] = block
    return b

class ValScorer:
    """Validation label scores with the layers below the adapter run once per run, rows
    batched (``batch`` at a time, similar lengths together: batch-1 rows ran at half the
    matmul throughput)."""

    def __init__(self, llm, clf, val: Sequence[Session], prefix_kv, model,
                 batch: int = 8) -> None:
        import torch

        self.labels = list(clf.labels)
        self.kv, self.kw = prefix_kv, prefix_kv.cache_kw
        n_pre, answer = prefix_kv.n, clf.prompt.answer_prefix
        pad = llm.tok.pad_token_id if llm.tok.pad_token_id is not None else llm.tok.eos_token_id
        prefix_ids, rows = None, []
        for p in clf.prepare(list(val), retrieve=bool(clf.settings.classify.k_examples)):
            text = llm.prompt_text(p.messages, answer)
            prompt_ids = llm.split_tokens(text, self.labels[0])[0]
            if prefix_ids is None:
                prefix_ids = prompt_ids[:n_pre]
            if len(prompt_ids) <= n_pre or not torch.equal(prompt_ids[:n_pre], prefix_ids):
                raise ValueError("validation prompt does not start with the training prefix")
            rows.append((prompt_ids[n_pre:], [llm.split_tokens(text, o)[1]
                                              for o in self.labels]))
        # rows whose label tokens match (they do unless the tokenizer merges across the
        # answer prefix) and of similar length share a batch
        groups: dict[tuple, list[int]] = {}
        for i, (_, opts) in enumerate(rows):
            groups.setdefault(tuple(tuple(o.tolist()) for o in opts), []).append(i)
        self.n = len(rows)
        self.batches = []
        for members in groups.values():
            members.sort(key=lambda i: len(rows[i][0]))
            for k in range(0, len(members), batch):
                idx = members[k: k + batch]
                self.batches.append(_make_batch(idx, [rows[i][0] for i in idx],
                                                rows[idx[0]][1], n_pre, pad))
        self.base_scores = self._whole_model(model, keep_hidden=True)
        first = self.batches[:1]
        self.fast = bool(first) and np.allclose(
            self._top_layers(model, first)[first[0].idx], self.base_scores[first[0].idx],
            atol=TOL)

    def _score(self, opt_ids, last_logits, opt_logits) -> list[float]:
        import torch

        first = torch.log_softmax(last_logits.float(), -1)
        out = [float(first[o[0]]) for o in opt_ids]
        if opt_logits is not None:
            logp = torch.log_softmax(opt_logits.float(), -1)
            off = 0
            for i, o in enumerate(opt_ids):
                m = len(o) - 1
                if m > 0:
                    out[i] += float(logp[off: off + m].gather(1, o[1:, None]).sum())
                    off += m
        return out

    def _scatter(self, b: _Batch, out: np.ndarray, last, opt) -> None:
        for j, i in enumerate(b.idx):
            out[i] = self._score(b.opt_ids, last[j], None if opt is None else opt[j])

    def _whole_model(self, model, keep_hidden: bool = False) -> np.ndarray:
        """Scores through every layer (step 0; the fallback), keeping the input of the first
        LoRA layer when asked."""
        import torch

        first, out = self.kv.first, np.zeros((self.n, len(self.labels)))
        was = model.training
        model.eval()
        dtype = model.dtype
        with torch.no_grad():
            for b in self.batches:
                cache = self.kv.build(model, len(b.idx))
                o = model(input_ids=b.ids, attention_mask=_additive(b.mask, dtype),
                          position_ids=b.pos, use_cache=True, logits_to_keep=1,
                          output_hidden_states=keep_hidden, **{self.kw: cache})
                last = o.logits[:, -1]
                if keep_hidden:
                    b.h_suffix = o.hidden_states[first]
                opt = None
                if b.packed is not None:
                    o = model(input_ids=b.packed, attention_mask=_additive(b.mask_opt, dtype),
                              position_ids=b.pos_opt, use_cache=True,
                              output_hidden_states=keep_hidden, **{self.kw: cache})
                    opt = o.logits
                    if keep_hidden:
                        b.h_opt = o.hidden_states[first]
                self._scatter(b, out, last, opt)
        model.train(was)
        return out

    def _top_layers(self, model, batches) -> np.ndarray:
        """Scores from the kept hidden states through the LoRA layers only."""
        import torch

        inner = model.get_base_model().model if hasattr(model, "get_base_model") \
            else model.model
        head = model.get_output_embeddings()
        layers = inner.layers[self.kv.first: inner.config.num_hidden_layers]
        out = np.zeros((self.n, len(self.labels)))

        def run(h, pos, mask, cache, last_only=False):
            emb = inner.rotary_emb(h, position_ids=pos)
            for layer in layers:
                h = layer(h, attention_mask=mask, position_embeddings=emb,
                          position_ids=pos, use_cache=True, **{self.kw: cache})
            # the vocabulary projection only where a label token is predicted
            return head(inner.norm(h[:, -1] if last_only else h))

        was = model.training
        model.eval()
        with torch.no_grad():
            for b in batches:
                cache = self.kv.build(model, len(b.idx))
                last = run(b.h_suffix, b.pos, b.mask, cache, last_only=True)
                opt = None if b.packed is None else run(b.h_opt, b.pos_opt, b.mask_opt, cache)
                self._scatter(b, out, last, opt)
        model.train(was)
        return out

    def scores(self, model) -> np.ndarray:
        """[sessions, labels] log-probs of each label under the model's current adapter."""
        return self._top_layers(model, self.batches) if self.fast else self._whole_model(model)

def _additive(allowed, dtype):
    """A bool mask as the additive float mask a model call takes."""
    import torch

    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
