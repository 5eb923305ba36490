"""Python client of the HTTP service: the same methods and return types as :class:`BehaviorRAG`.

``Client`` (sync) and ``AsyncClient`` (asyncio) share everything but the transport loop. Errors
come back as the class the service raised (:func:`behavior_rag.wire.rebuild_error` rebuilds
them), so ``except TaxonomyError`` works the same in-process and over HTTP. Request bodies are
built, and answers parsed, with the service's own models (:mod:`behavior_rag.wire`); a request
those models refuse raises :class:`~behavior_rag.wire.InvalidRequest` before it is sent.

Retries: 429/503 answers (honouring ``Retry-After``) and connection failures are retried with
exponential backoff and jitter, ``max_retries`` times. Every endpoint is idempotent (upserts
replace by session id), so a retry after a lost answer cannot double anything.

Example:
    >>> from behavior_rag import Client, generate
    >>> c = Client("http://127.0.0.1:8080", api_key="s3cret")                   # doctest: +SKIP
    >>> c.add_labelled(generate(100, seed=1).sessions).index_size               # doctest: +SKIP
    100
    >>> c.classify(session).label, [n.session_id for n in c.similar(text="gifts", k=3)]
    ...                                                                         # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, overload
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from behavior_rag.errors import TaxonomyError
from behavior_rag.index.base import Filter
from behavior_rag.index.build import UpsertReport
from behavior_rag.live.client import LiveCalls
from behavior_rag.profile import UserProfile
from behavior_rag.retrieve import Neighbor
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session
from behavior_rag.wire import (
    BatchTooLarge,
    ClassifyRequest,
    DeleteReport,
    DeleteRequest,
    Ready,
    RequestTimeout,
    ServiceUnavailable,
    SimilarRequest,
    UpsertRequest,
    invalid_request,
    rebuild_error,
)

Progress = Callable[[int, int], None]
RETRY_STATUS = (429, 503)
# Failures where the request may not have reached the service, or its answer was lost.
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
                httpx.RemoteProtocolError, httpx.PoolTimeout)
_NEIGHBORS = TypeAdapter(list[Neighbor])
_PREDICTIONS = TypeAdapter(list[PatternPrediction])


class _Base:
    """Settings, request bodies and answer decoding shared by both clients."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, backoff_s: float = 0.2, max_backoff_s: float = 10.0,
                 batch_size: int = 256) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.batch_size = batch_size  # the service's serve.max_batch (default 256)
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._timeout = httpx.Timeout(timeout)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = _retry_after(response) if response is not None else None
        if after is None:  # full jitter: spread retries of many clients over the window
            after = random.uniform(0, self.backoff_s * 2 ** attempt)
        return min(after, self.max_backoff_s)

    def _result(self, r: httpx.Response) -> Any:
        if r.is_success:
            return r.json()
        try:
            body = r.json()
        except ValueError:
            body = r.text
        raise rebuild_error(r.status_code, body)

    def _gave_up(self, method: str, path: str, attempts: int, last: Exception | None):
        if isinstance(last, (httpx.ReadTimeout, httpx.WriteTimeout)):
            return RequestTimeout(f"no answer from {self.base_url}{path} within the timeout",
                                  url=self.base_url + path, attempts=attempts)
        return ServiceUnavailable(f"{method} {self.base_url}{path} failed after {attempts} "
                                  f"attempts: {last}", url=self.base_url + path,
                                  attempts=attempts)

    def _batched(self, items: Sequence[Any], send: Callable[[int, Sequence[Any]], Generator]):
        """Plan: ``send(start, chunk)`` for consecutive chunks of ``batch_size`` (one empty
        chunk for no items); results in order. A service with a smaller ``max_batch`` says so
        in its BatchTooLarge error, and the rest goes in batches of that size."""
        out, start = [], 0
        while start < len(items) or not out:
            chunk = items[start: start + max(1, self.batch_size)]
            try:
                out.append((yield from send(start, chunk)))
            except BatchTooLarge as e:
                limit = e.context.get("limit")
                if not isinstance(limit, int) or not 0 < limit < len(chunk):
                    raise
                self.batch_size = limit
                continue
            start += len(chunk)
            if start >= len(items):
                break
        return out

    # ---- plans ---------------------------------------------------------------------------
    # Each method is written once, as a generator that yields what to do — ("send", method,
    # path, body) or ("sleep", seconds) — and gets the outcome back. Client and AsyncClient
    # differ only in how _drive carries these out (blocking or awaiting).
    def _exchange(self, method: str, path: str, body: Any = None):
        """One request with retries; returns the decoded answer or raises our error."""
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            outcome = yield ("send", method, path, body)
            response = outcome if isinstance(outcome, httpx.Response) else None
            if response is not None:
                if response.status_code not in RETRY_STATUS or attempt == self.max_retries:
                    return self._result(response)
            elif isinstance(outcome, RETRY_ERRORS):
                last = outcome
            else:  # a slow answer (a retry would add load) or a non-transient error
                raise self._gave_up(method, path, attempt + 1, outcome) from outcome
            if attempt < self.max_retries:
                yield ("sleep", self._delay(attempt, response))
        raise self._gave_up(method, path, self.max_retries + 1, last) from last

    def _upsert(self, sessions, labels, labelled: bool, split, progress):
        sessions = list(sessions)
        if labels is not None and len(labels) != len(sessions):  # as BehaviorRAG.add_labelled
            raise TaxonomyError(f"{len(labels)} labels for {len(sessions)} sessions",
                                field="labels")

        def send(start, chunk):
            lab = None if labels is None else list(labels[start: start + len(chunk)])
            report = UpsertReport.model_validate((yield from self._exchange("POST", "/v1/sessions",
                _body(UpsertRequest, sessions=chunk, labels=lab, labelled=labelled, split=split))))
            if progress:
                progress(start + len(chunk), len(sessions))
            return report

        return _merge((yield from self._batched(sessions, send)))

    def _delete(self, session_ids):
        def send(start, chunk):
            if not chunk:
                return 0
            answer = yield from self._exchange("DELETE", "/v1/sessions",
                                               _body(DeleteRequest, session_ids=chunk))
            return DeleteReport.model_validate(answer).deleted

        return sum((yield from self._batched(list(session_ids), send)))

    def _classify(self, session, voters=False):
        if isinstance(session, Session):
            return PatternPrediction.model_validate((yield from self._exchange(
                "POST", "/v1/classify", _body(ClassifyRequest, session=session,
                                              voters=voters))))
        return (yield from self._classify_many(list(session), None, voters))

    def _classify_many(self, sessions, progress, voters=False):
        sessions = list(sessions)

        def send(start, chunk):
            if not chunk:
                return []
            preds = _PREDICTIONS.validate_python((yield from self._exchange(
                "POST", "/v1/classify", _body(ClassifyRequest, sessions=chunk,
                                              voters=voters))))
            if progress:
                progress(start + len(chunk), len(sessions))
            return preds

        return [p for batch in (yield from self._batched(sessions, send)) for p in batch]

    def _similar(self, **query: Any):
        return _NEIGHBORS.validate_python((yield from self._exchange(
            "POST", "/v1/similar", _body(SimilarRequest, **query))))

    def _get(self, path: str, model: type[BaseModel]):
        return model.model_validate((yield from self._exchange("GET", path)))

    def _ready(self):
        return (yield from self._get("/readyz", Ready)).model_dump()


def _profile_path(user_id: str, use_llm: bool, patterns: bool) -> str:
    return (f"/v1/profiles/{quote(user_id, safe='')}?use_llm={str(use_llm).lower()}"
            f"&patterns={str(patterns).lower()}")


def _retry_after(r: httpx.Response) -> float | None:
    v = r.headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        try:  # an HTTP date
            return max(0.0, parsedate_to_datetime(v).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _body(model: type[BaseModel], **fields: Any) -> dict:
    """The JSON body of one request, validated by the model the service validates it with.

    Example:
        >>> _body(DeleteRequest, session_ids=("s1",))
        {'session_ids': ['s1']}
        >>> _body(SimilarRequest, text="gifts", k=0)
        Traceback (most recent call last):
        ...
        behavior_rag.wire.errors.InvalidRequest: field 'k': Input should be greater than or equal to 1
    """
    try:
        request = model(**fields)
    except ValidationError as e:  # what the service would answer (422), without the round trip
        raise invalid_request([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
                              ) from None
    return request.model_dump(mode="json")


def _merge(reports: list[UpsertReport]) -> UpsertReport:
    return UpsertReport(sessions=sum(r.sessions for r in reports),
                        embedded=sum(r.embedded for r in reports),
                        unchanged=sum(r.unchanged for r in reports),
                        index_size=reports[-1].index_size)


class Client(LiveCalls, _Base):
    """Synchronous client (httpx). Use as a context manager, or call :meth:`close`.

    Inputs longer than ``batch_size`` go in several requests (the service saves after each).
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, transport: httpx.BaseTransport | None = None,
                 **kw: Any) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, **kw)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                  timeout=self._timeout, transport=transport)

    def _drive(self, plan: Generator) -> Any:
        try:
            step = next(plan)
            while True:
                if step[0] == "sleep":
                    time.sleep(step[1])
                    step = plan.send(None)
                    continue
                try:
                    outcome: Any = self._http.request(step[1], step[2], json=step[3])
                except httpx.TransportError as e:  # the plan decides: retry or raise
                    outcome = e
                step = plan.send(outcome)
        except StopIteration as done:
            return done.value

    def index_sessions(self, sessions: Sequence[Session], *, split: str | None = None,
                       progress: Progress | None = None) -> UpsertReport:
        """Upsert sessions (labelled or not; labels must be in the service's taxonomy)."""
        return self._drive(self._upsert(sessions, None, False, split, progress))

    def add_labelled(self, sessions: Sequence[Session], labels: Sequence[str] | None = None, *,
                     split: str | None = "train", progress: Progress | None = None
                     ) -> UpsertReport:
        """Index labelled sessions; every one must carry a taxonomy label (or get one here)."""
        return self._drive(self._upsert(sessions, labels, True, split, progress))

    def delete_sessions(self, session_ids: Sequence[str]) -> int:
        """Delete sessions by id; returns how many were in the index."""
        return self._drive(self._delete(session_ids))

    @overload
    def classify(self, session: Session, *, voters: bool = False) -> PatternPrediction: ...

    @overload
    def classify(self, session: Sequence[Session], *, voters: bool = False
                 ) -> list[PatternPrediction]: ...

    def classify(self, session, *, voters: bool = False):
        """Label one session, or a list (returns the shape it was given); ``voters`` as
        :meth:`BehaviorRAG.classify`."""
        return self._drive(self._classify(session, voters))

    def classify_many(self, sessions: Sequence[Session], *, progress: Progress | None = None,
                      voters: bool = False) -> list[PatternPrediction]:
        """Label sessions; results in input order."""
        return self._drive(self._classify_many(sessions, progress, voters))

    def similar(self, *, session: Session | None = None, session_id: str | None = None,
                user_id: str | None = None, text: str | None = None, k: int = 10,
                filter: Filter | None = None, with_text: bool = False) -> list[Neighbor]:
        """Similar sessions (or shoppers, for ``user_id``), as :meth:`BehaviorRAG.similar`."""
        return self._drive(self._similar(
            session=session, session_id=session_id, user_id=user_id, text=text, k=k,
            filter=filter, with_text=with_text))

    def taxonomy(self) -> Taxonomy:
        """The labels the service's classifier uses."""
        return self._drive(self._get("/v1/taxonomy", Taxonomy))

    def profile(self, user_id: str, *, use_llm: bool = False, patterns: bool = False
                ) -> UserProfile:
        """A user's profile, as :meth:`BehaviorRAG.profile`."""
        return self._drive(self._get(_profile_path(user_id, use_llm, patterns), UserProfile))

    def ready(self) -> dict:
        """``/readyz``: index size, embedder and LLM backend (raises NotReady while loading)."""
        return self._drive(self._ready())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(LiveCalls, _Base):
    """The same methods as :class:`Client`, awaitable (httpx.AsyncClient). ``async with`` it."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, transport: httpx.AsyncBaseTransport | None = None,
                 **kw: Any) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, **kw)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       timeout=self._timeout, transport=transport)

    async def _drive(self, plan: Generator) -> Any:
        try:
            step = next(plan)
            while True:
                if step[0] == "sleep":
                    await asyncio.sleep(step[1])
                    step = plan.send(None)
                    continue
                try:
                    outcome: Any = await self._http.request(step[1], step[2], json=step[3])
                except httpx.TransportError as e:
                    outcome = e
                step = plan.send(outcome)
        except StopIteration as done:
            return done.value

    async def index_sessions(self, sessions: Sequence[Session], *, split: str | None = None,
                             progress: Progress | None = None) -> UpsertReport:
        return await self._drive(self._upsert(sessions, None, False, split, progress))

    async def add_labelled(self, sessions: Sequence[Session],
                           labels: Sequence[str] | None = None, *, split: str | None = "train",
                           progress: Progress | None = None) -> UpsertReport:
        return await self._drive(self._upsert(sessions, labels, True, split, progress))

    async def delete_sessions(self, session_ids: Sequence[str]) -> int:
        return await self._drive(self._delete(session_ids))

    async def classify(self, session, *, voters: bool = False):
        """Label one session, or a list (returns the shape it was given)."""
        return await self._drive(self._classify(session, voters))

    async def classify_many(self, sessions: Sequence[Session], *,
                            progress: Progress | None = None, voters: bool = False
                            ) -> list[PatternPrediction]:
        return await self._drive(self._classify_many(sessions, progress, voters))

    async def similar(self, *, session: Session | None = None, session_id: str | None = None,
                      user_id: str | None = None, text: str | None = None, k: int = 10,
                      filter: Filter | None = None, with_text: bool = False) -> list[Neighbor]:
        return await self._drive(self._similar(
            session=session, session_id=session_id, user_id=user_id, text=text, k=k,
            filter=filter, with_text=with_text))

    async def taxonomy(self) -> Taxonomy:
        return await self._drive(self._get("/v1/taxonomy", Taxonomy))

    async def profile(self, user_id: str, *, use_llm: bool = False, patterns: bool = False
                      ) -> UserProfile:
        return await self._drive(self._get(_profile_path(user_id, use_llm, patterns),
                                           UserProfile))

    async def ready(self) -> dict:
        return await self._drive(self._ready())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
