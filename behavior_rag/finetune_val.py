"""Validation during the LoRA fine-tune: label scores, macro-F1 and log-loss, cheaply.

The layers below the adapter never change during training, so neither does their output for a
validation prompt. ``_ValScorer`` runs the whole model once per validation session (the step-0
evaluation), keeps the hidden state entering the first LoRA layer for the prompt's own tokens
and for the label tokens, and each later evaluation runs only the LoRA layers over it (top 6 of
30 layers: a fifth of the work). The scores are the ones ``LocalLLM.score_options`` gives (same
tokens, same packed label layout): a self-check on the first session compares the two paths
and falls back to the whole model if they disagree (a model whose layers take other inputs).

Example:
    >>> scorer = _ValScorer(llm, clf, val, prefix_kv, peft_model)            # doctest: +SKIP
    >>> f1, log_loss = val_metrics(scorer.scores(peft_model), gold, labels)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def _crop_to(cache, n: int) -> None:
    """Every layer of a DynamicCache back to its first ``n`` positions (the lower layers may
    already be there: only the LoRA layers ran)."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.shape[-2] > n:
            layer.keys, layer.values = layer.keys[..., :n, :], layer.values[..., :n, :]


class _Row:
    __slots__ = ("suffix", "opt_ids", "packed", "pos_opt", "allowed_opt", "h_suffix", "h_opt")


class _ValScorer:
    """Validation label scores with the layers below the adapter run once per run."""

    def __init__(self, llm, clf, val: Sequence[Session], prefix_kv, model) -> None:
        import torch

        self.labels = list(clf.labels)
        self.kv, self.kw = prefix_kv, prefix_kv.cache_kw
        n_pre, answer = prefix_kv.n, clf.prompt.answer_prefix
        prefix_ids = None
        self.rows: list[_Row] = []
        for p in clf.prepare(list(val), retrieve=bool(clf.settings.classify.k_examples)):
            text = llm.prompt_text(p.messages, answer)
            prompt_ids = llm.split_tokens(text, self.labels[0])[0]
            if prefix_ids is None:
                prefix_ids = prompt_ids[:n_pre]
            if len(prompt_ids) <= n_pre or not torch.equal(prompt_ids[:n_pre], prefix_ids):
                raise ValueError("validation prompt does not start with the training prefix")
            r = _Row()
            r.suffix = prompt_ids[n_pre:]
            r.opt_ids = [llm.split_tokens(text, o)[1] for o in self.labels]
            self._pack(r, n_pre + len(r.suffix))
            self.rows.append(r)
        self.base_scores = self._whole_model(model, keep_hidden=True)
        self.fast = bool(self.rows) and np.allclose(
            self._top_layers(model, self.rows[:1])[0], self.base_scores[0], atol=TOL)

    @staticmethod
    def _pack(r: _Row, n: int) -> None:
        """The label tokens laid out as ``LocalLLM._packed_rest`` lays them out."""
        from behavior_rag.llm.local import packed_options

        packed = packed_options(r.opt_ids, n)
        r.packed = None if packed is None else packed[0]
        if packed is not None:
            r.allowed_opt, r.pos_opt = packed[1], packed[2][None]

    def _score(self, r: _Row, last_logits, opt_logits) -> list[float]:
        import torch

        first = torch.log_softmax(last_logits.float(), -1)
        out = [float(first[o[0]]) for o in r.opt_ids]
        if opt_logits is not None:
            logp = torch.log_softmax(opt_logits.float(), -1)
            off = 0
            for i, o in enumerate(r.opt_ids):
                m = len(o) - 1
                if m > 0:
                    out[i] += float(logp[off: off + m].gather(1, o[1:, None]).sum())
                    off += m
        return out

    def _whole_model(self, model, keep_hidden: bool = False) -> np.ndarray:
        """Scores through every layer (step 0; the fallback), keeping the input of the first
        LoRA layer when asked."""
        import torch

        first, n_pre, out = self.kv.first, self.kv.n, []
        was = model.training
        model.eval()
        with torch.no_grad():
            cache = self.kv.build(model, 1)
            for r in self.rows:
                n = n_pre + len(r.suffix)
                o = model(input_ids=r.suffix[None], position_ids=torch.arange(n_pre, n)[None],
                          use_cache=True, logits_to_keep=1, output_hidden_states=keep_hidden,
                          **{self.kw: cache})
                last = o.logits[0, -1]
                if keep_hidden:
                    r.h_suffix = o.hidden_states[first]
                opt_logits = None
                if r.packed is not None:
                    dtype = model.dtype
                    mask = torch.zeros(1, 1, *r.allowed_opt.shape, dtype=dtype)
                    mask[0, 0][~r.allowed_opt] = torch.finfo(dtype).min
                    o = model(input_ids=r.packed[None], attention_mask=mask,
                              position_ids=r.pos_opt, use_cache=True,
                              output_hidden_states=keep_hidden, **{self.kw: cache})
                    opt_logits = o.logits[0]
                    if keep_hidden:
                        r.h_opt = o.hidden_states[first]
                _crop_to(cache, n_pre)
                out.append(self._score(r, last, opt_logits))
        model.train(was)
        return np.array(out)

    def _top_layers(self, model, rows) -> np.ndarray:
        """Scores from the kept hidden states through the LoRA layers only."""
        import torch

        inner = model.get_base_model().model if hasattr(model, "get_base_model") \
            else model.model
        head = model.get_output_embeddings()
        layers = inner.layers[self.kv.first: inner.config.num_hidden_layers]
        n_pre, out = self.kv.n, []

        def run(h, pos, allowed, cache, last_only=False):
            emb = inner.rotary_emb(h, position_ids=pos)
            for layer in layers:
                h = layer(h, attention_mask=allowed[None, None], position_embeddings=emb,
                          position_ids=pos, use_cache=True, **{self.kw: cache})
            # the vocabulary projection only where a label token is predicted
            return head(inner.norm(h[:, -1:] if last_only else h))[0]

        was = model.training
        model.eval()
        with torch.no_grad():
            cache = self.kv.build(model, 1)
            for r in rows:
                m = len(r.suffix)
                allowed = torch.cat([torch.ones(m, n_pre, dtype=torch.bool),
                                     torch.tril(torch.ones(m, m, dtype=torch.bool))], 1)
                last = run(r.h_suffix, torch.arange(n_pre, n_pre + m)[None], allowed,
                           cache, last_only=True)[-1]
                opt = None if r.packed is None else run(r.h_opt, r.pos_opt, r.allowed_opt,
                                                        cache)
                _crop_to(cache, n_pre)
                out.append(self._score(r, last, opt))
        model.train(was)
        return np.array(out)

    def scores(self, model) -> np.ndarray:
        """[sessions, labels] log-probs of each label under the model's current adapter."""
        return self._top_layers(model, self.rows) if self.fast else self._whole_model(model)
