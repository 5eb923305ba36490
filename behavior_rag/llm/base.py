"""The LLM seam. Every backend can (a) score a fixed set of answer strings by log-probability
and (b) generate text; structured output and re-asking live above this seam.

Small CPU models are weak at free text, so classification scores the label strings directly:
the label set is closed, and a log-probability per label is what combining with the heads needs anyway.

Example:
    >>> msgs = [ChatMessage(role="user", content="Is water wet? Answer yes or no.")]
    >>> backend.score_options(msgs, ["yes", "no"])        # doctest: +SKIP
    [-0.4, -1.2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from behavior_rag.types import ChatMessage

__all__ = ["ChatMessage", "LLMBackend"]

T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class LLMBackend(Protocol):
    """What classification needs from a language model, capabilities declared, not sniffed.

    Backends subclass it to inherit the defaults (a serial :meth:`map_concurrent`, no
    concurrency, not thread-safe, can score) and override what they do better.
    """

    name: str
    #: :meth:`map_concurrent` really runs calls in parallel (a remote server with a pool).
    concurrent: bool = False
    #: may be called from several threads at once (else the service serialises calls).
    thread_safe: bool = False
    #: :meth:`score_options` works (per-option log-probabilities); else use mode=generate.
    can_score: bool = True

    def score_options(self, messages: list[ChatMessage], options: list[str], *,
                      answer_prefix: str = "") -> list[float]:
        """Total log-probability of each option as the assistant's reply (after
        ``answer_prefix``), one float per option, in order."""
        ...

    def generate(self, messages: list[ChatMessage], *, max_tokens: int = 256,
                 json_schema: dict | None = None) -> str:
        """The assistant's reply (greedy). ``json_schema``: ask for JSON of that shape where the
        engine can enforce it (vLLM); others get the schema in the prompt and may fail."""
        ...

    def map_concurrent(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]``, in order; concurrent backends run the calls in parallel."""
        return [fn(x) for x in items]
