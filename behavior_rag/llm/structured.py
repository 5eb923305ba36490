"""Structured LLM output, as instructor does it: a response model per call, JSON asked for by
schema, validated, and on failure re-asked with the validation error (bounded); after the last
attempt an :class:`~behavior_rag.errors.LLMOutputError` the caller turns into its fallback.

Example:
    >>> class Answer(BaseModel):
    ...     label: str
    >>> ask(llm, messages, Answer, reask=lambda e: f"Fix: {e}")         # doctest: +SKIP
    Answer(label='deal_hunter')
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from behavior_rag.errors import LLMOutputError
from behavior_rag.llm.base import ChatMessage, LLMBackend

M = TypeVar("M", bound=BaseModel)


def json_part(raw: str) -> str:
    """The first ``{...}`` block of a reply (models like to wrap JSON in prose or fences).

    Example:
        >>> json_part('Sure! ```{"a": 1}``` done')
        '{"a": 1}'
    """
    start, end = raw.find("{"), raw.rfind("}")
    if start == -1 or end <= start:
        return raw
    candidate = raw[start: end + 1]
    try:
        json.loads(candidate)
        return candidate
    except json.JSONDecodeError:
        return raw


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if not isinstance(e, ValidationError) else str(e)


def ask(llm: LLMBackend, messages: list[ChatMessage], model: type[M], *,
        reask: Callable[[str], str], max_reasks: int = 1, max_tokens: int = 300,
        schema: dict | None = None, check: Callable[[M], None] | None = None) -> M:
    """``model`` parsed from the LLM's reply to ``messages``. ``schema``: the JSON schema to
    ask for (default: the model's own); ``check``: further validation that raises
    ``ValueError``; ``reask(error)``: the user message that asks again."""
    schema = schema or model.model_json_schema()
    msgs, raw, error, attempt = list(messages), "", "", 0
    for attempt in range(1, max_reasks + 2):  # noqa: B007
        raw = llm.generate(msgs, json_schema=schema, max_tokens=max_tokens)
        try:
            out = model.model_validate_json(json_part(raw))
            if check is not None:
                check(out)
            return out
        except (ValidationError, ValueError) as e:
            error = _first_line(e)
            msgs = [*msgs, ChatMessage(role="assistant", content=raw),
                    ChatMessage(role="user", content=reask(error))]
    raise LLMOutputError(error, raw_output=raw[:2000], attempts=attempt)
