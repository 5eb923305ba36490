"""Pick the LLM backend from :class:`Settings` (``llm.backend``). A LangChain chat model is an
object, not a setting: pass ``BehaviorRAG(llm=LangChainBackend(chat_model))``.

Example:
    >>> from behavior_rag.settings import Settings
    >>> get_llm(Settings(llm={"backend": "none"})) is None
    True
"""

from __future__ import annotations

from behavior_rag.llm.adapter import check_adapter, read_card
from behavior_rag.llm.base import LLMBackend
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import load_taxonomy


def get_llm(settings: Settings | None = None) -> LLMBackend | None:
    """The configured backend; None for ``backend="none"`` (kNN vote only)."""
    s = (settings or default_settings()).llm
    if s.backend == "none":
        return None
    if s.adapter is not None:  # refuse an adapter for another model or taxonomy, up front
        full = settings or default_settings()
        check_adapter(s.adapter, full.llm.model if s.backend == "local" else
                      read_card(s.adapter).base_model, load_taxonomy(full.classify.taxonomy))
    if s.backend == "local":
        from behavior_rag.llm.local import LocalLLM

        home = (settings or default_settings()).home
        return LocalLLM(s.model, cache_root=home / "models", threads=s.threads,
                        adapter=s.adapter)
    from behavior_rag.llm.vllm import VLLMBackend  # the only other value Settings allows

    return VLLMBackend(s.base_url, model=s.model,
                       api_key=s.api_key.get_secret_value() if s.api_key else None,
                       timeout_s=s.timeout_s, max_retries=s.max_retries,
                       concurrency=s.concurrency)
