"""Count tokens the way the embedding model will, so rendered text fits its window.

Uses the model's own ``tokenizer.json`` through the ``tokenizers`` library (fast, no torch
import), with truncation switched off so long texts are counted, not clipped.

Example:
    >>> tc = TokenCounter.for_model("all-MiniLM-L6-v2")
    >>> tc.count("viewed item 123") > 2
    True
"""

from __future__ import annotations

from functools import lru_cache

from behavior_rag.errors import RenderError
from behavior_rag.resources import embedding_model_dir


class TokenCounter:
    """Token counts of texts under one model's tokenizer (special tokens included)."""

    def __init__(self, tokenizer) -> None:  # tokenizers.Tokenizer
        self._tok = tokenizer
        self._tok.no_truncation()
        self._tok.no_padding()
        self.special = len(self._tok.encode("").ids)

    @classmethod
    def for_model(cls, model: str) -> TokenCounter:
        return _cached(model)

    def count(self, text: str) -> int:
        return len(self._tok.encode(text).ids)

    def count_parts(self, texts: list[str]) -> list[int]:
        """Tokens of each text without the special tokens (for budgeting pieces of a text)."""
        if not texts:
            return []
        return [len(e.ids) - self.special for e in self._tok.encode_batch(texts)]


@lru_cache(maxsize=4)
def _cached(model: str) -> TokenCounter:
    from tokenizers import Tokenizer

    path = embedding_model_dir(model) / "tokenizer.json"
    if not path.is_file():
        raise RenderError("the embedding model has no tokenizer.json to count tokens with",
                          model=model, file=str(path))
    return TokenCounter(Tokenizer.from_file(str(path)))
