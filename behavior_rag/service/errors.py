"""The service's error handlers: every error leaves as ``{"error", "message", <context>}``.

The classes and the status table are the wire contract (:mod:`behavior_rag.wire.errors`, shared
with the client); this module only installs the FastAPI handlers that render them, imported
lazily so importing it needs no FastAPI.

Example:
    >>> install(app, retry_after_s=1)                                   # doctest: +SKIP

    Then ``raise Overloaded("busy")`` in a route answers 503 ``{"error": "Overloaded", "message":
    "busy"}`` with ``Retry-After: 1``.
"""

from __future__ import annotations

import logging

from behavior_rag.errors import BehaviorRagError, WriteConflict
from behavior_rag.wire.errors import (
    RETRY_AFTER,
    AuthError,
    InvalidRequest,
    NotReady,
    Overloaded,
    invalid_request,
    status_for,
)

log = logging.getLogger(__name__)


def install(app, retry_after_s: int) -> None:
    """Render our errors, FastAPI's validation errors and Starlette's HTTP errors in one shape.

    Example:
        >>> install(app, retry_after_s=1)                               # doctest: +SKIP
    """
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def render(exc: BehaviorRagError, status: int | None = None) -> JSONResponse:
        status = status or status_for(exc)
        headers = {}
        if isinstance(exc, RETRY_AFTER):
            headers["Retry-After"] = str(exc.context.get("retry_after", retry_after_s))
        if isinstance(exc, AuthError):
            headers["WWW-Authenticate"] = 'Bearer realm="behavior_rag"'
        if status >= 500 and not isinstance(exc, (Overloaded, NotReady)):  # those: metrics
            log.warning("%s %s: %s", status, type(exc).__name__, exc.message)
        return JSONResponse(exc.to_dict(), status_code=status, headers=headers)

    async def on_ours(request, exc: BehaviorRagError):
        return render(exc)

    async def on_validation(request, exc: RequestValidationError):
        return render(invalid_request(exc.errors()))

    async def on_http(request, exc: HTTPException):
        ours = getattr(exc, "error", None)  # limits.py raises HTTPException carrying our error
        if isinstance(ours, BehaviorRagError):
            return render(ours, exc.status_code)
        name = {404: "NotFoundError", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return JSONResponse({"error": name, "message": str(exc.detail), "status": exc.status_code},
                            status_code=exc.status_code, headers=exc.headers)

    async def on_overflow(request, exc: OverflowError):
        # Dates near year 1 or 9999 with an offset, or huge numbers, overflow in datetime /
        # polars conversions — inside validators or model calls. Always bad input, never ours.
        log.info("out-of-range input on %s: %s", request.url.path, exc)
        return render(InvalidRequest(f"a value is out of range: {exc}", field="body"))

    async def on_unexpected(request, exc: Exception):
        # A bug: log the traceback here, tell the client nothing about our internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "InternalError", "message": "internal server error"},
                            status_code=500)

    app.add_exception_handler(BehaviorRagError, on_ours)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(OverflowError, on_overflow)
    app.add_exception_handler(Exception, on_unexpected)


def already_served(folder) -> WriteConflict:
    """The error of a second service on a folder that another process serves: it would never
    see the first one's commits, and every write it took would be refused."""
    return WriteConflict("this index folder is already served by another `behavior-rag serve` "
                         "process: use that service (its HTTP API takes writes), stop it "
                         "first, or serve a copy of the folder", file=str(folder), field="index")
