"""The LLM seam. Every backend can (a) score a fixed set of answer strings by log-probability
and (b) generate text; structured output and re-asking live above this seam.

Small CPU models are weak at free text, so classification scores the label strings directly:
the label set is closed, and a log-probability per label is what fusion needs anyway.

Example:
    >>> msgs = [ChatMessage(role="user", content="Is water wet? Answer yes or no.")]
    >>> backend.score_options(msgs, ["yes", "no"])        # doctest: +SKIP
    [-0.4, -1.2]
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


@runtime_checkable
class LLMBackend(Protocol):
    """What classification needs from a language model."""

    name: str

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
