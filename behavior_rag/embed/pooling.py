"""Shared tokenise -> run -> pool path of the exported-model backends (onnx, openvino).

One tokenizer (the model's own ``tokenizer.json``, truncated at its ``max_seq_length``),
length-sorted batches, attention-masked mean pooling and L2 normalisation — the same maths as
sentence-transformers, so each runtime only supplies ``run(feeds) -> last_hidden_state``.

Example:
    >>> pool = TokenPooler(embedding_model_dir("all-MiniLM-L6-v2"))      # doctest: +SKIP
    >>> pool.embed(lambda feeds: session.run(None, feeds)[0], ["a"], 384).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from behavior_rag.embed.base import Progress, normalise

Run = Callable[[dict[str, np.ndarray]], np.ndarray]  # feeds -> (batch, seq, dim) hidden states


class TokenPooler:
    """Tokenises like the model, batches by length, pools like sentence-transformers."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.max_len = 256
        cfg = model_dir / "sentence_bert_config.json"
        if cfg.exists():
            self.max_len = int(json.loads(cfg.read_text()).get("max_seq_length", self.max_len))
        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok.enable_truncation(self.max_len)
        self._tok.no_padding()

    def embed(self, run: Run, texts: Sequence[str], dim: int, *, batch_size: int = 16,
              progress: Progress | None = None) -> np.ndarray:
        """``(len(texts), dim)`` unit float32 rows, in the order given."""
        texts = list(texts)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        enc = self._tok.encode_batch(texts)
        # Length-sorted batches waste little compute on padding (as sentence-transformers does).
        order = np.argsort([-len(e.ids) for e in enc], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            feeds = _feeds([enc[i] for i in idx])
            hidden = run(feeds)
            m = feeds["attention_mask"][..., None].astype(np.float32)
            out[idx] = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            if progress:
                progress(min(start + batch_size, len(texts)), len(texts))
        return normalise(out)


def _feeds(encodings) -> dict[str, np.ndarray]:
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n] = e.ids
        mask[row, :n] = 1
        types[row, :n] = e.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
