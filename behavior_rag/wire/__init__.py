"""The HTTP contract both ends speak: request/response models (:mod:`.schemas`) and the errors
with their status table (:mod:`.errors`). The service validates and renders with it, the client
builds requests and rebuilds errors with it; it imports only library types, never FastAPI, the
service or the client.

Example:
    >>> from behavior_rag.wire import DeleteRequest, status_for, NotReady
    >>> DeleteRequest(session_ids=["s1"]).model_dump(mode="json"), status_for(NotReady("loading"))
    ({'session_ids': ['s1']}, 503)
"""

from __future__ import annotations

from behavior_rag.wire.errors import (
    AuthError,
    BatchTooLarge,
    InvalidRequest,
    NotFoundError,
    NotReady,
    Overloaded,
    RequestTimeout,
    RequestTooLarge,
    ServiceError,
    ServiceUnavailable,
    invalid_request,
    rebuild_error,
    status_for,
)
from behavior_rag.wire.schemas import (
    ClassifyRequest,
    DeleteReport,
    DeleteRequest,
    ErrorBody,
    Health,
    Ready,
    SimilarRequest,
    UpsertRequest,
)

__all__ = [
    "AuthError", "BatchTooLarge", "ClassifyRequest", "DeleteReport", "DeleteRequest", "ErrorBody",
    "Health", "InvalidRequest", "NotFoundError", "NotReady", "Overloaded", "Ready",
    "RequestTimeout", "RequestTooLarge", "ServiceError", "ServiceUnavailable", "SimilarRequest",
    "UpsertRequest", "invalid_request", "rebuild_error", "status_for",
]
