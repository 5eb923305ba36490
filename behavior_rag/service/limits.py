"""Limits that keep one service healthy under load: body size, batch size, model slots.

* :class:`BodyLimitMiddleware`: 413 from ``Content-Length`` before the body is parsed, and
  again while reading a stream that lied or had no length (chunked uploads). The unread rest
  of a refused body (up to ``DRAIN_BYTES``) is read and dropped before answering: a server
  that closes a socket with unread bytes makes the kernel reset the connection, and the
  client loses the 413 it was sent.
* :func:`check_batch`: 422 naming the field when a request carries more than ``max_batch``.
* :class:`ModelSlots`: at most ``max_concurrency`` model calls at once, in a thread pool of that
  size so the event loop stays free; a request that finds no slot within ``acquire_timeout_s``
  is answered 503 at once (with Retry-After) rather than queueing without bound.

Example:
    >>> import asyncio
    >>> slots = ModelSlots(1, acquire_timeout_s=0.01, request_timeout_s=5, retry_after_s=1)
    >>> asyncio.run(slots.run(sum, [1, 2, 3]))
    6
    >>> slots.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.exceptions import HTTPException

from behavior_rag.service.metrics import Metrics
from behavior_rag.wire.errors import BatchTooLarge, Overloaded, RequestTimeout, RequestTooLarge

T = TypeVar("T")

DRAIN_BYTES = 64 * 1024 * 1024  # beyond this a refused upload is cut off, not read


def check_batch(field: str, n: int, limit: int) -> None:
    """Refuse a batch larger than ``limit`` (422 naming ``field``).

    Example:
        >>> check_batch("sessions", 3, 2)
        Traceback (most recent call last):
        ...
        behavior_rag.wire.errors.BatchTooLarge: field 'sessions' (value '3'): at most 2 items per request
    """
    if n > limit:
        raise BatchTooLarge(f"at most {limit} items per request", field=field, value=n,
                            limit=limit)


class _TooLarge(HTTPException):
    # FastAPI turns any exception raised while it reads the body into a 400, except
    # HTTPException, which it re-raises; errors.install renders the error this one carries.
    def __init__(self, limit: int) -> None:
        super().__init__(413, "request body too large")
        self.error = RequestTooLarge(f"request body is larger than {limit} bytes",
                                     field="body", limit=limit)


async def _drain(receive, limit: int) -> None:
    """Read and drop request body messages until the body ends, ``limit`` bytes have been
    dropped, or the client goes away."""
    dropped = 0
    while dropped <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return  # http.disconnect
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimitMiddleware:
    """Pure ASGI middleware: bodies over ``max_bytes`` are refused with 413."""

    def __init__(self, app, max_bytes: int, metrics: Metrics | None = None) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            # Refuse before parsing; drop the body first (see the module docstring) and close
            # the connection so no unread byte is taken for the next request.
            if length <= DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES)
            await self._refuse(send)
            return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    self._count()
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_BYTES - seen)
                    raise _TooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.reject("body_too_large")

    async def _refuse(self, send) -> None:
        import json

        self._count()
        body = json.dumps(_TooLarge(self.max_bytes).error.to_dict()).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope) -> int | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None  # the server (h11) refuses such requests before we see them
    return None


class ModelSlots:
    """Bounded concurrency for model calls (embedding, FAISS search, classification).

    A slot is held until the worker thread finishes — also after the request gave up waiting
    (timeout, client gone) — so the number of threads doing model work never exceeds ``n``.
    """

    def __init__(self, n: int, *, acquire_timeout_s: float, request_timeout_s: float,
                 retry_after_s: int, metrics: Metrics | None = None) -> None:
        self.n = n
        self.acquire_timeout_s = acquire_timeout_s
        self.request_timeout_s = request_timeout_s
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.busy = 0
        self._sem: asyncio.Semaphore | None = None
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="behavior-rag-model")

    async def _acquire(self) -> None:
        if self._sem is None:  # created on first use, inside the server's event loop
            self._sem = asyncio.Semaphore(self.n)
        sem = self._sem
        if not sem.locked():
            await sem.acquire()  # a slot is free: returns at once
            return
        if self.acquire_timeout_s > 0:
            try:
                await asyncio.wait_for(sem.acquire(), self.acquire_timeout_s)
                return
            except asyncio.TimeoutError:
                pass
        if self.metrics is not None:
            self.metrics.reject("overload")
        raise Overloaded(f"all {self.n} model slots are busy; retry after "
                         f"{self.retry_after_s} s", retry_after=self.retry_after_s)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the pool once a slot is free; :class:`Overloaded` if none frees in
        time, :class:`RequestTimeout` if the call outlives ``request_timeout_s``."""
        await self._acquire()
        sem = self._sem
        self.busy += 1

        def release(_fut) -> None:  # runs on the event loop when the thread's work is done
            self.busy -= 1
            sem.release()

        try:
            fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except BaseException:
            release(None)
            raise
        fut.add_done_callback(release)
        try:
            # shield: a timeout or a cancelled request must not cancel the bookkeeping above.
            return await asyncio.wait_for(asyncio.shield(fut), self.request_timeout_s)
        except asyncio.TimeoutError:
            if self.metrics is not None:
                self.metrics.reject("timeout")
            raise RequestTimeout(f"the model call took longer than {self.request_timeout_s} s",
                                 timeout_s=self.request_timeout_s) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
