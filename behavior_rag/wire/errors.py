"""The errors of the HTTP contract, and the ONE table that maps every error to a status code.

Both ends read this table: the service renders an error as ``{"error": <class name>,
"message": ..., <context>}`` with the status below, and :mod:`behavior_rag.client` rebuilds the
class from ``error`` (:func:`rebuild_error`), so callers catch the same types in-process and over
HTTP. Pure Python: no FastAPI, so the client works without the ``serve`` extra.

Example:
    >>> status_for(NotFoundError("session is not in the index", field="session_id"))
    404
    >>> status_for(TaxonomyError("label 'x' is not in the taxonomy"))
    422
    >>> rebuild_error(503, {"error": "Overloaded", "message": "busy", "retry_after": 1}).context
    {'retry_after': 1}
"""

from __future__ import annotations

from typing import Any

from behavior_rag.errors import (
    BehaviorRagError,
    ConfigError,
    DataError,
    IngestError,
    LLMError,
    LLMOutputError,
    RenderError,
    StoreError,
    TaxonomyError,
    WriteConflict,
)
from behavior_rag.index.base import EmbedderMismatch


class ServiceError(BehaviorRagError):
    """The service answered with an error that has no in-process counterpart."""


class AuthError(ServiceError):
    """Missing or wrong API key (401)."""


class Overloaded(ServiceError):
    """Every model slot stayed busy for ``acquire_timeout_s`` (503, with Retry-After)."""


class NotReady(ServiceError):
    """The index or embedder is still loading, or failed to load (503)."""


class RequestTimeout(ServiceError):
    """A model call ran past ``request_timeout_s`` (504; not retried: it would time out again)."""


class ServiceUnavailable(ServiceError):
    """Client side: the service could not be reached, or stayed overloaded, after retries."""


class NotFoundError(ConfigError):
    """An unknown session or user id (404). In-process the same call raises ConfigError, so
    ``except ConfigError`` catches both."""


class InvalidRequest(DataError, ConfigError):
    """Malformed JSON, wrong types or impossible parameters (422); ``field`` is the path of the
    first bad field. Also a ConfigError: in-process, the same mistakes in parameters (``k=0``,
    two queries at once) raise ConfigError, so callers catch one type either way."""


class BatchTooLarge(DataError):
    """More sessions in one request than ``max_batch`` (422, naming the field)."""


class RequestTooLarge(DataError):
    """The request body is larger than ``max_body_bytes`` (413)."""


# The one place statuses are decided. Looked up along the class's MRO, so the most specific
# class wins (StoreError is a DataError but means *our* files are broken: 500, not 422).
STATUS: dict[type[BehaviorRagError], int] = {
    AuthError: 401,
    NotFoundError: 404,
    RequestTooLarge: 413,
    InvalidRequest: 422,
    BatchTooLarge: 422,
    Overloaded: 503,
    NotReady: 503,
    RequestTimeout: 504,
    ServiceUnavailable: 503,
    WriteConflict: 409,     # another writer holds or changed the index folder
    StoreError: 500,        # the index folder on the server is unreadable or inconsistent
    RenderError: 500,       # e.g. the tokenizer is missing on the server
    EmbedderMismatch: 500,  # the server's model differs from the index's: a deployment problem
    LLMOutputError: 502,    # the model answered, but nothing usable even after re-asking
    LLMError: 503,          # the model server is down or failing: worth retrying later
    TaxonomyError: 422,
    IngestError: 422,
    DataError: 422,
    ConfigError: 422,       # the request asked for something impossible (k < 1, two queries)
    BehaviorRagError: 400,
}
RETRY_AFTER = (Overloaded, NotReady, LLMError)

# Every class a client may be asked to rebuild, by the name the service writes.
ERROR_TYPES: dict[str, type[BehaviorRagError]] = {c.__name__: c for c in STATUS}


def status_for(exc: BehaviorRagError) -> int:
    """The HTTP status of one of our errors."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def rebuild_error(status: int, body: Any) -> BehaviorRagError:
    """The error a response body describes, as the class the service raised (client side).

    Unknown names (a newer server) become :class:`ServiceError`; ``status_code`` is set on all.
    """
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        exc: BehaviorRagError = ServiceError(f"HTTP {status}", status=status,
                                             body=str(body)[:500])
    else:
        ctx = {k: v for k, v in body.items() if k not in ("error", "message")}
        message = str(body.get("message", f"HTTP {status}"))
        cls = ERROR_TYPES.get(body["error"])
        try:
            exc = cls(message, **ctx) if cls else ServiceError(message, error=body["error"],
                                                                 **ctx)
        except TypeError:  # a context key the class's signature does not take
            exc = ServiceError(message, error=body["error"], **ctx)
    exc.status_code = status  # type: ignore[attr-defined]
    return exc


def invalid_request(errors: list[dict[str, Any]]) -> InvalidRequest:
    """FastAPI/pydantic error list -> one :class:`InvalidRequest` naming the first bad field.

    Example:
        >>> e = invalid_request([{"loc": ("body", "sessions", 0, "user_id"), "msg": "Field "
        ...                       "required", "type": "missing"}])
        >>> str(e)
        "field 'sessions.0.user_id': Field required"
    """
    items = []
    for e in errors[:20]:
        loc = [str(x) for x in e.get("loc", ())]
        where = loc[0] if loc else "body"
        # "body" alone (malformed JSON, a whole-body rule) is named as such; otherwise the path.
        path = ".".join(loc[1:]) if len(loc) > 1 and where in ("body", "query", "path",
                                                               "header") else ".".join(loc)
        if e.get("type") == "json_invalid":
            path = "body"
        msg = str(e.get("msg", "invalid"))
        if e.get("ctx", {}).get("error") and e.get("type") == "json_invalid":
            msg = f"{msg}: {e['ctx']['error']} (at character {loc[-1] if loc else '?'})"
        items.append({"field": path or where, "location": where, "message": msg,
                      "type": e.get("type")})
    first = items[0] if items else {"field": "body", "location": "body", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidRequest(f"{first['message']}{more}",
                          field=first["field"], location=first["location"], errors=items)
