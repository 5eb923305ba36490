"""Pick the LLM backend named by :class:`Settings` (``llm.backend``) from the registry of LLM
backends: ``local``, ``vllm``, ``none`` built in, others from packages declaring a factory
``make(settings) -> LLMBackend`` under the ``behavior_rag.llm_backends`` entry point group (or
:data:`LLM_BACKENDS` ``.register`` in Python), so the CLI and the service reach them by name.
A LangChain chat model is an object, not a setting: pass
``BehaviorRAG(llm=LangChainBackend(chat_model))``.

Example:
    >>> from behavior_rag.settings import Settings
    >>> get_llm(Settings(llm={"backend": "none"})) is None
    True
    >>> LLM_BACKENDS.names()[:3]
    ['local', 'none', 'vllm']
"""

from __future__ import annotations

from behavior_rag.errors import ConfigError
from behavior_rag.llm.adapter import check_adapter, read_card
from behavior_rag.llm.base import LLMBackend
from behavior_rag.plugins import Registry
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import load_taxonomy

LLM_BACKENDS = Registry("behavior_rag.llm_backends", {
    "local": "behavior_rag.llm.factory:local_backend",
    "vllm": "behavior_rag.llm.factory:vllm_backend",
    "none": "behavior_rag.llm.factory:no_backend"}, what="LLM backend", field="llm.backend")


def local_backend(settings: Settings) -> LLMBackend:
    from behavior_rag.llm.local import LocalLLM

    s = settings.llm
    return LocalLLM(s.model, cache_root=settings.home / "models", threads=s.threads,
                    adapter=s.adapter)


def vllm_backend(settings: Settings) -> LLMBackend:
    from behavior_rag.llm.vllm import VLLMBackend

    s = settings.llm
    return VLLMBackend(s.base_url, model=s.model,
                       api_key=s.api_key.get_secret_value() if s.api_key else None,
                       timeout_s=s.timeout_s, max_retries=s.max_retries,
                       concurrency=s.concurrency)


def no_backend(settings: Settings) -> None:
    return None  # kNN vote / heads only


def get_llm(settings: Settings | None = None) -> LLMBackend | None:
    """The configured backend; None for ``backend="none"`` (heads only)."""
    full = settings or default_settings()
    s = full.llm
    make = LLM_BACKENDS.get(s.backend)
    if s.adapter is not None and s.backend in ("local", "vllm"):
        # refuse an adapter for another model or taxonomy, up front
        check_adapter(s.adapter, s.model if s.backend == "local" else
                      read_card(s.adapter).base_model, load_taxonomy(full.classify.taxonomy))
    llm = make(full)
    if llm is not None and not isinstance(llm, LLMBackend):
        raise ConfigError(f"LLM backend {s.backend!r} made a {type(llm).__name__}, not an "
                          "LLMBackend", field="llm.backend", value=s.backend)
    return llm
