"""Pick the LLM backend from :class:`Settings` (``llm.backend``).

Example:
    >>> from behavior_rag.settings import Settings
    >>> get_llm(Settings(llm={"backend": "none"})) is None
    True
"""

from __future__ import annotations

from behavior_rag.errors import ConfigError
from behavior_rag.llm.base import LLMBackend
from behavior_rag.settings import Settings, default_settings


def get_llm(settings: Settings | None = None) -> LLMBackend | None:
    """The configured backend; None for ``backend="none"`` (kNN vote only)."""
    s = (settings or default_settings()).llm
    if s.backend == "none":
        return None
    if s.adapter is not None:  # refuse an adapter for another model or taxonomy, up front
        from behavior_rag.finetune import check_adapter
        from behavior_rag.taxonomy import load_taxonomy

        full = settings or default_settings()
        card = check_adapter(s.adapter, full.llm.model if s.backend == "local" else
                             _card_base(s.adapter), load_taxonomy(full.classify.taxonomy))
        del card
    if s.backend == "local":
        from behavior_rag.llm.local import LocalLLM

        home = (settings or default_settings()).home
        return LocalLLM(s.model, cache_root=home / "models", threads=s.threads,
                        adapter=s.adapter)
    if s.backend == "vllm":
        from behavior_rag.llm.vllm import VLLMBackend

        return VLLMBackend(s.base_url, model=s.model,
                           api_key=s.api_key.get_secret_value() if s.api_key else None,
                           timeout_s=s.timeout_s, max_retries=s.max_retries,
                           concurrency=s.concurrency)
    raise ConfigError("the langchain backend wraps a chat model object: pass it as "
                      "BehaviorRAG(llm=LangChainBackend(your_chat_model)) instead of settings",
                      field="llm.backend", value=s.backend)


def _card_base(adapter) -> str:
    # vLLM serves the adapter under its own name; the base model is whatever the card says.
    from behavior_rag.finetune import read_card

    return read_card(adapter).base_model
