"""LangChain backend: plug in any ``BaseChatModel`` you already use (OpenAI, Anthropic, Ollama …).

Generation goes through ``with_structured_output(schema)`` when the model supports it (the
reply is then JSON of the right shape), else plain ``invoke`` — either way our classifier
validates the reply and re-asks with the error. Chat models do not expose per-option
log-probabilities generically, so this backend works in ``classify.mode = "generate"``.

Example:
    >>> from langchain_openai import ChatOpenAI                               # doctest: +SKIP
    >>> rag = BehaviorRAG(settings, llm=LangChainBackend(ChatOpenAI(model="gpt-4o-mini")))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any

from behavior_rag.errors import LLMError
from behavior_rag.llm.base import ChatMessage, LLMBackend


def _require():
    try:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    except ImportError as e:
        raise ImportError("the LangChain backend needs langchain-core: "
                          "pip install 'behavior_rag[langchain]'") from e
    return {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


class LangChainBackend(LLMBackend):
    """Wraps a LangChain ``BaseChatModel``."""

    concurrent = False
    thread_safe = False  # not every chat model is: the service serialises calls
    can_score = False  # no per-option log-probabilities: classify.mode must be "generate"

    def __init__(self, chat_model: Any, name: str | None = None) -> None:
        self._types = _require()
        self.chat_model = chat_model
        self.name = name or f"langchain:{type(chat_model).__name__}"

    def _messages(self, messages: list[ChatMessage]) -> list[Any]:
        return [self._types[m.role](content=m.content) for m in messages]

    def score_options(self, messages: list[ChatMessage], options: list[str], *,
                      answer_prefix: str = "") -> list[float]:
        raise LLMError("LangChain chat models give no per-option log-probabilities: set "
                       "BEHAVIOR_RAG_CLASSIFY__MODE=generate for this backend",
                       backend=self.name)

    def generate(self, messages: list[ChatMessage], *, max_tokens: int = 256,
                 json_schema: dict | None = None) -> str:
        msgs = self._messages(messages)
        try:
            if json_schema is not None:
                try:
                    runnable = self.chat_model.with_structured_output(
                        {"title": "answer", **json_schema})
                except NotImplementedError:
                    runnable = None
                if runnable is not None:
                    out = runnable.invoke(msgs)
                    return json.dumps(out if isinstance(out, dict) else
                                      getattr(out, "model_dump", lambda: out)())
            reply = self.chat_model.invoke(msgs)
        except Exception as e:  # a provider's own errors: report them as ours, with context
            if isinstance(e, LLMError):
                raise
            raise LLMError(f"LangChain model failed: {e}", backend=self.name) from e
        content = reply.content
        return content if isinstance(content, str) else json.dumps(content)
