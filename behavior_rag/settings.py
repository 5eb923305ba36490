"""One place for configuration: :class:`Settings`, read from ``BEHAVIOR_RAG_*`` env vars.

Nested sections are plain pydantic models; set them from the environment with a double
underscore, e.g. ``BEHAVIOR_RAG_INGEST__SESSION_GAP_MINUTES=45``.

Example:
    >>> s = Settings(ingest={"session_gap_minutes": 45})
    >>> s.ingest.session_gap_minutes
    45.0
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from behavior_rag.bounds import MAX_EVENTS
from behavior_rag.plugins import check_name


class IngestSettings(BaseModel):
    """How event logs become sessions."""

    session_gap_minutes: float = Field(30.0, gt=0, description="Inactivity gap that splits sessions "
                                       "when the source has no session id. A gap strictly longer "
                                       "than this starts a new session.")
    mode: Literal["strict", "lenient"] = "strict"
    pseudonymize: bool = True
    pseudonym_key: SecretStr | None = Field(
        None, description="Key for the keyed hash of user ids. Unset: a random key is created "
        "once in <home>/pseudonym.key and reused, so ids stay stable across runs.")
    max_reported_errors: int = Field(50, ge=1)


class RenderSettings(BaseModel):
    """How sessions become text."""

    max_tokens: int = Field(256, ge=64, description="Token budget per rendered session, counted "
                            "with the embedding model's tokenizer (all-MiniLM-L6-v2 reads 256).")
    timezone: str = "UTC"


class EmbedSettings(BaseModel):
    """Which sentence embedding model embeds (and sizes) renderings, on which backend."""

    model: str = Field("all-MiniLM-L6-v2", description="'all-MiniLM-L6-v2' (the packaged model) "
                       "or a path to a local sentence-transformers folder.")
    backend: str = Field(
        "auto", min_length=1, max_length=100, description="auto (default): torch on a CUDA GPU, else the fastest installed "
        "backend that keeps mean cosine >= 0.99 to torch fp32 -- openvino (2.6x torch on a quiet 2-core box, extra "
        "[openvino]), else onnx-int8 (dynamic int8, extra [onnx]), else torch; resolved when "
        "the embedder loads and recorded concretely in the index. Or name one: torch "
        "(sentence-transformers reference), onnx (fp32 on ONNX Runtime), onnx-int8, openvino "
        "(fp32 on OpenVINO), or one a plugin declares (`behavior-rag plugins`). Measured "
        "ratios: eval/reports/bench_embed.md.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return check_name(v, ("auto", "torch", "onnx", "onnx-int8", "openvino"),
                          "behavior_rag.embedders", "embedding backend")


class IndexSettings(BaseModel):
    """Which FAISS index holds the vectors."""

    kind: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="auto: exact flat below auto_threshold vectors, HNSW above.")
    auto_threshold: int = Field(50_000, ge=1)
    lock_timeout_s: float = Field(10.0, ge=0, description="How long a writer waits for "
                                  "another writer of the same index folder to commit.")
    sq8: bool = Field(False, description="8-bit scalar quantisation: 4x less memory, ~1% recall.")
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(64, ge=8)
    nlist: int | None = Field(None, description="IVF lists; default 4*sqrt(n) at training.")
    nprobe: int = Field(16, ge=1)
    gpu: Literal["auto", "on", "off"] = Field(
        "auto", description="Search a GPU copy (faiss-gpu) when one is visible.")
    omp_threads: int | None = Field(None, description="FAISS OpenMP threads (None: FAISS's "
                                    "default). 1 is faster when other work shares the cores.")
    hybrid: bool = Field(True, description="Join each session's z-scored facts to its text "
                         "vector (behavior_rag.vectors): similar shoppers, the kNN vote and "
                         "discovery then see behaviour, not only how a rendering reads "
                         "(eval/reports/bench_similar.md). Takes effect when an index is "
                         "built; the first batch indexed fixes the facts' mean and scale, and "
                         "fit re-chooses the weight on dev. False: text vectors only.")
    hybrid_weight: float = Field(0.5, ge=0.0, le=1.0, description="The facts' share of a hybrid "
                                 "vector when no labelled dev set chose it (fit chooses it on "
                                 "dev).")


class LLMSettings(BaseModel):
    """Which language model classifies."""

    backend: str = Field(
        "local", min_length=1, max_length=100, description="A registered LLM backend: local, "
        "vllm, none (heads only), or one a plugin declares (`behavior-rag plugins`). A "
        "LangChain chat model is passed as an object: BehaviorRAG(llm=LangChainBackend(...)).")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return check_name(v, ("local", "vllm", "none"), "behavior_rag.llm_backends",
                          "LLM backend")
    model: str = Field("smollm2-135m", description="local: smollm2-135m, gemma3-270m, an HF "
                       "folder or a .gguf; vllm: the served model (or LoRA adapter) name.")
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)
    concurrency: int = Field(8, ge=1)
    threads: int | None = None
    adapter: Path | None = Field(None, description="A LoRA adapter folder from `behavior-rag "
                                 "finetune` (local: loaded and merged; vllm: checked against "
                                 "its model card, served under `model`).")


class ClassifySettings(BaseModel):
    """Few-shot classification."""

    taxonomy: str = "personas"
    prompt: str = Field("classify", description="Prompt file: a name under prompts/ or a "
                        "path. A LoRA adapter's model card sets it (its training prompt, "
                        "classify_compact by default).")
    k_examples: int = Field(3, ge=0, description="Labelled neighbours shown in the prompt.")
    per_label_max: int = Field(2, ge=1, description="At most this many examples per label, so "
                               "one label cannot flood the prompt.")
    example_max_chars: int = Field(240, ge=40, description="Examples are cut to their first "
                                   "lines (facts first) within this many characters.")
    query_max_tokens: int = Field(160, ge=64, description="Token budget of the session to label "
                                  "in the prompt (prompt length drives CPU latency).")
    knn_k: int = Field(15, ge=1, description="Labelled neighbours in the kNN vote.")
    heads: list[str] = Field(["facts", "forest", "embed", "knn"], min_length=1,
                             description="Heads `fit` fits, by registered name (built in: "
                             "facts, forest, embed, knn, items; plugins add more); the stack "
                             "keeps those CV chooses.")
    mode: Literal["score", "generate"] = Field(
        "score", description="score: label log-probabilities (any backend with logprobs); "
        "generate: structured JSON output, re-asked on validation errors.")
    max_reasks: int = Field(2, ge=0)
    strip_instructions: bool = Field(True, description="Cut instruction-like spans ('ignore the "
                                     "instructions...', '</session>', 'Label: x') out of free "
                                     "text before embedding and prompting (behavior_rag.guard).")
    llm: Literal["always", "cascade", "never"] = Field(
        "cascade", description="When the LLM is asked. With a fitted model (`behavior-rag "
        "fit`): cascade asks it only where the stacked confidence is below the threshold "
        "fitted on dev (never, if it did not help there); always asks for every session (its "
        "answer counts with the weight fitted on dev: 0 where it did not help); never uses the "
        "heads alone. Without a fitted model, cascade is always.")
    history: bool = Field(True, description="Cross-session facts: fit and classify with the "
                          "users' earlier sessions (the index's sessions and those added with "
                          "BehaviorRAG.add_history) and item/category purchase propensities.")
    cascade_dev_max: int = Field(100, ge=0, description="Dev sessions the LLM is asked for "
                                 "while fitting the cascade (the least confident ones).")
    cascade_max_rate: float = Field(0.2, ge=0, le=1, description="The cascade asks the LLM for "
                                    "at most this share of sessions (measured on dev).")
    abstain_cost: float = Field(1.0, ge=0, description="Fitting the abstain threshold: a wrong "
                                "answer costs this much, a right one gains 1, abstaining 0.")
    evidence_min_share: float = Field(0.6, ge=0, le=1, description="A supporting fact must "
                                      "carry at least this share of the strongest one's "
                                      "contribution to be cited (0: the top three). Weak "
                                      "reasons cite bulk events the decision barely rests on: "
                                      "on synth, 0 / 0.3 / 0.6 gave comprehensiveness 1.7x / "
                                      "1.9x / 2.0x the random baseline.")


class ServeSettings(BaseModel):
    """The HTTP service (``behavior-rag serve``). Set the key from the environment
    (``BEHAVIOR_RAG_SERVE__API_KEY``) rather than the command line, where ``ps`` shows it.

    Example:
        >>> ServeSettings(api_key="k" * 32).max_concurrency
        2
    """

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_key: SecretStr | None = Field(
        None, description="Clients send it as `X-API-Key` or `Authorization: Bearer`. Unset: the "
        "service refuses to start unless insecure_no_auth is set, which only loopback allows.")
    insecure_no_auth: bool = Field(False, description="Serve without a key (loopback only).")
    key_name: str = Field("api-key", min_length=1, max_length=64, description="Who the label "
                          "set records for labels given with the key (the queue, /v1/labels).")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    max_batch: int = Field(256, ge=1, description="Most sessions per request (more: 422).")
    max_concurrency: int = Field(2, ge=1, description="Model calls (embed, classify) at once.")
    acquire_timeout_s: float = Field(0.1, ge=0, description="How long a request waits for a free "
                                     "model slot before it is answered 503 (overloaded).")
    request_timeout_s: float = Field(30.0, gt=0, description="A model call still running after "
                                     "this is answered 503; its slot frees when it ends.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 answers.")


class LiveSettings(BaseModel):
    """Live sessions of the service (``/v1/live``, :mod:`behavior_rag.live`).

    Example:
        >>> LiveSettings().max_open
        10000
    """

    max_open: int = Field(10_000, ge=1, description="Open live sessions kept; one more ends "
                          "(and commits) the least recently active.")
    max_events: int = Field(MAX_EVENTS, ge=1, le=MAX_EVENTS, description="Events per live "
                            "session (at most the bound of any session); more is refused (422).")
    gap_minutes: float | None = Field(None, gt=0, description="A live session ends after this "
                                      "long without an append (server clock). None: "
                                      "ingest.session_gap_minutes.")
    rescore_every: int = Field(5, ge=1, description="A model that reads vectors or neighbours "
                               "(embedding, kNN heads) is re-scored every this many new "
                               "visible events (and on GET ?fresh=true), not per event.")
    commit_every_s: float = Field(5.0, gt=0, description="Ended sessions are committed to the "
                                  "index (one atomic commit) at most this long after ending.")
    commit_max: int = Field(256, ge=1, description="...or as soon as this many are waiting.")
    on_end: Literal["index", "history"] = Field(
        "index", description="Where an ended session goes: index (rendered, embedded, in the "
        "session store like POST /v1/sessions: similar shoppers and profiles see it) or "
        "history (the session store of earlier sessions only: no embedding).")
    fsync: bool = Field(False, description="Also fsync the write-ahead log before an append "
                        "is answered (group commit: concurrent appends share one), so a power "
                        "loss cannot lose it either. Off: the log is written to the OS before "
                        "the answer, which a killed server (SIGKILL) cannot lose; fsync cost "
                        "0.2 ms on a quiet disk, ~6 ms on a busy one (eval/reports/"
                        "bench_live.md).")


class Settings(BaseSettings):
    """All settings. Env prefix ``BEHAVIOR_RAG_``; nested with ``__``."""

    model_config = SettingsConfigDict(env_prefix="BEHAVIOR_RAG_", env_nested_delimiter="__",
                                      extra="forbid")

    home: Path = Field(Path.home() / ".cache" / "behavior_rag",
                       description="Where keys and converted models are cached.")
    data_dir: Path = Field(Path("../shared/data"), description="Where the demo looks for real data.")
    index_dir: Path = Path("indexes")
    ingest: IngestSettings = IngestSettings()
    render: RenderSettings = RenderSettings()
    embed: EmbedSettings = EmbedSettings()
    index: IndexSettings = IndexSettings()
    llm: LLMSettings = LLMSettings()
    classify: ClassifySettings = ClassifySettings()
    serve: ServeSettings = ServeSettings()
    live: LiveSettings = LiveSettings()

    @model_validator(mode="after")
    def _adapter_prompt(self) -> Settings:
        """An adapter is used with the prompt it was trained on: its model card's
        ``k_examples`` (few-shot neighbours) and ``prompt`` (prompt file) become
        ``classify.k_examples`` and ``classify.prompt``; an explicit different value is refused."""
        card = self.llm.adapter / "model_card.json" if self.llm.adapter else None
        if card is None or not card.is_file():
            return self  # a missing card is refused, with its path, when the LLM is built
        data = json.loads(card.read_text())
        update = {}
        for key in ("k_examples", "prompt"):
            want = data.get(key)
            if want is None or want == getattr(self.classify, key):
                continue
            if key in self.classify.model_fields_set:
                raise ValueError(f"llm.adapter {self.llm.adapter} was trained with "
                                 f"classify.{key}={want}, but {key}="
                                 f"{getattr(self.classify, key)} was set")
            update[key] = want
        if update:
            self.classify = self.classify.model_copy(update=update)
        return self


@lru_cache(maxsize=1)
def default_settings() -> Settings:
    """Settings from the environment, read once (building Settings costs ~2 ms; hot paths call
    this). Pass an explicit ``Settings`` to override."""
    return Settings()
