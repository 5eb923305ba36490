"""Request and response models of the HTTP API: the service validates requests with them (its
OpenAPI schema is generated from them) and the client builds requests and parses answers with
the same classes. Payloads reuse the library's own models — :class:`~behavior_rag.types.Session`,
:class:`~behavior_rag.types.PatternPrediction`, :class:`~behavior_rag.retrieve.Neighbor`,
:class:`~behavior_rag.index.base.Filter`, :class:`~behavior_rag.index.build.UpsertReport`,
:class:`~behavior_rag.taxonomy.Taxonomy` — so both ends and the in-process facade speak the
same types.

Example:
    >>> SimilarRequest(text="buys gifts", k=3).k
    3
    >>> try:
    ...     SimilarRequest(text="a", session_id="s1")
    ... except ValueError as e:
    ...     print(e.errors()[0]["msg"])
    Value error, give exactly one of session, session_id, user_id, text (got session_id, text)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from behavior_rag.annotate import QueueItem, QueueOrder
from behavior_rag.bounds import MAX_SPLIT
from behavior_rag.index.base import Filter
from behavior_rag.labels.agreement import Agreement
from behavior_rag.labels.labelset import NewLabel
from behavior_rag.types import Session

_BATCH = "At most `serve.max_batch` (default 256) per request; more is refused with 422."


class UpsertRequest(BaseModel):
    """``POST /v1/sessions``: add or replace sessions (by ``session_id``), then save the index.

    Unchanged sessions (same text, same label) are skipped. Labels, when present, must be in the
    service's taxonomy. ``labelled=true`` (or ``labels``) is :meth:`BehaviorRAG.add_labelled`:
    every session must then carry a label.
    """

    model_config = ConfigDict(extra="forbid")

    sessions: list[Session] = Field(description=_BATCH)
    labels: list[str] | None = Field(None, description="Override the sessions' own labels, one "
                                     "per session (implies labelled).")
    labelled: bool = Field(False, description="Require a taxonomy label on every session.")
    split: str | None = Field(None, max_length=MAX_SPLIT, description="Split name stored with each session "
                              "(add_labelled uses 'train').")


class DeleteRequest(BaseModel):
    """``DELETE /v1/sessions`` body (or repeat the ``session_id`` query parameter)."""

    model_config = ConfigDict(extra="forbid")

    session_ids: list[str] = Field(description=_BATCH)


class DeleteReport(BaseModel):
    deleted: int = Field(description="Sessions that were in the index and are now gone.")
    not_found: list[str] = Field(default_factory=list)
    index_size: int


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``: ``session`` answers one prediction, ``sessions`` a list (in order)."""

    model_config = ConfigDict(extra="forbid")

    session: Session | None = None
    sessions: list[Session] | None = Field(None, description=_BATCH)
    voters: bool = Field(False, description="Also list the similar labelled sessions behind "
                         "each label when the model does not read them anyway (a facts-only "
                         "model then embeds and searches too).")

    @model_validator(mode="after")
    def _one(self) -> ClassifyRequest:
        if (self.session is None) == (self.sessions is None):
            raise ValueError("give exactly one of session, sessions")
        return self


class SimilarRequest(BaseModel):
    """``POST /v1/similar``: neighbours of exactly one of a session, a session id in the index,
    a user (similar shoppers, one hit per user) or free text."""

    model_config = ConfigDict(extra="forbid")

    session: Session | None = None
    session_id: str | None = None
    user_id: str | None = None
    text: str | None = Field(None, max_length=20_000)
    k: int = Field(10, ge=1, le=1000)
    filter: Filter | None = None
    with_text: bool = Field(False, description="Include each hit's rendered text.")

    @model_validator(mode="after")
    def _one(self) -> SimilarRequest:
        given = [n for n in ("session", "session_id", "user_id", "text")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of session, session_id, user_id, text (got "
                             f"{', '.join(given) or 'none'})")
        return self


class Health(BaseModel):
    status: str = "ok"


class Ready(BaseModel):
    ready: bool
    index_size: int
    embedder: str
    backend: str
    llm: str


class ErrorBody(BaseModel):
    """Every error: the class name (the client re-raises that class), a message, and context
    such as ``field``, ``value``, ``row``, ``limit`` or ``retry_after``."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(examples=["InvalidRequest"])
    message: str


def bad_text(value: Any, path: tuple = ()) -> str | None:
    """Dotted path of the first string (or dict key) that is not valid Unicode, else None.

    JSON may carry lone surrogates (a ``\\ud800`` escape); pydantic keeps them, and tokenizers
    refuse them deep inside a model call. Requests are checked up front instead (422 naming
    the field).

    Example:
        >>> lone = chr(0xD800)
        >>> bad_text(SimilarRequest(session_id="s" + lone))
        'session_id'
        >>> bad_text({"attrs": {"ok": 1, "b" + lone: 2}}), bad_text({"a": ["x"]})
        ('attrs', None)
    """
    where = ".".join(map(str, path)) or "body"
    if isinstance(value, str):
        return where if not _utf8(value) else None
    if isinstance(value, BaseModel):
        items = [(k, getattr(value, k)) for k in type(value).model_fields]
    elif isinstance(value, dict):
        if not all(_utf8(k) for k in value if isinstance(k, str)):
            return where  # a bad key: name the mapping that holds it
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    else:
        return None
    for k, v in items:
        found = bad_text(v, (*path, k))
        if found is not None:
            return found
    return None


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class LabelRequest(BaseModel):
    """``POST /v1/labels``: an analyst's labels (source ``human``; who: the key's name)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[NewLabel] = Field(min_length=1, description=_BATCH)


class QueuePage(BaseModel):
    """``GET /v1/labels/queue``: the next sessions to label, in active-learning order, with
    what the analyst needs for the first ``detail`` of them."""

    order: QueueOrder
    items: list[QueueItem]


class LabelSummary(BaseModel):
    """``GET /v1/labels``: what the label set holds, and how far LLM suggestions are trusted."""

    events: int
    sessions: int
    by_source: dict[str, dict[str, int]]
    taxonomy: str
    llm_agreement: Agreement
