"""Python client of the HTTP service: the same methods and return types as :class:`BehaviorRAG`.

``Client`` (sync) and ``AsyncClient`` (asyncio) share everything but the transport loop. Errors
come back as the class the service raised (:mod:`behavior_rag.service.errors` rebuilds them),
so ``except TaxonomyError`` works the same in-process and over HTTP.

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
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, overload

import httpx
from pydantic import TypeAdapter

from behavior_rag.errors import TaxonomyError
from behavior_rag.index.base import Filter
from behavior_rag.index.build import UpsertReport
from behavior_rag.retrieve import Neighbor
from behavior_rag.service.errors import RequestTimeout, ServiceUnavailable, rebuild_error
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session

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

    def _chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        n = max(1, self.batch_size)
        return [items[i: i + n] for i in range(0, len(items), n)] or [items]

    def _label_chunks(self, sessions: Sequence[Session], labels: Sequence[str] | None):
        sessions = list(sessions)
        if labels is not None and len(labels) != len(sessions):  # as BehaviorRAG.add_labelled
            raise TaxonomyError(f"{len(labels)} labels for {len(sessions)} sessions",
                                field="labels")
        chunks = self._chunks(sessions)
        starts = [i * max(1, self.batch_size) for i in range(len(chunks))]
        return [(c, None if labels is None else list(labels[s: s + len(c)]))
                for c, s in zip(chunks, starts)]


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


def _sessions(sessions: Sequence[Session]) -> list[dict]:
    return [s.model_dump(mode="json") for s in sessions]


def _upsert_body(sessions, labels, labelled: bool, split: str | None) -> dict:
    return {"sessions": _sessions(sessions), "labels": None if labels is None else list(labels),
            "labelled": labelled, "split": split}


def _merge(reports: list[UpsertReport]) -> UpsertReport:
    return UpsertReport(sessions=sum(r.sessions for r in reports),
                        embedded=sum(r.embedded for r in reports),
                        unchanged=sum(r.unchanged for r in reports),
                        index_size=reports[-1].index_size)


def _similar_body(session, session_id, user_id, text, k, filter, with_text) -> dict:
    return {"session": session.model_dump(mode="json") if session is not None else None,
            "session_id": session_id, "user_id": user_id, "text": text, "k": k,
            "filter": filter.model_dump(mode="json") if filter is not None else None,
            "with_text": with_text}


class Client(_Base):
    """Synchronous client (httpx). Use as a context manager, or call :meth:`close`.

    Larger inputs than ``batch_size`` are sent in several requests (each saved on its own).
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, transport: httpx.BaseTransport | None = None,
                 **kw: Any) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, **kw)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                  timeout=self._timeout, transport=transport)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = self._http.request(method, path, json=body)
                if response.status_code not in RETRY_STATUS or attempt == self.max_retries:
                    return self._result(response)
            except RETRY_ERRORS as e:
                last = e
            except httpx.TimeoutException as e:  # a slow answer: retrying would add load
                raise self._gave_up(method, path, attempt + 1, e) from e
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, response))
        raise self._gave_up(method, path, self.max_retries + 1, last) from last

    def index_sessions(self, sessions: Sequence[Session], *, split: str | None = None,
                       progress: Progress | None = None) -> UpsertReport:
        """Upsert sessions (labelled or not); the service saves the index after each batch."""
        return self._upsert(sessions, None, False, split, progress)

    def add_labelled(self, sessions: Sequence[Session], labels: Sequence[str] | None = None, *,
                     split: str | None = "train", progress: Progress | None = None
                     ) -> UpsertReport:
        """Index labelled sessions; every label must be in the service's taxonomy."""
        return self._upsert(sessions, labels, True, split, progress)

    def _upsert(self, sessions, labels, labelled, split, progress) -> UpsertReport:
        reports, done = [], 0
        for chunk, lab in self._label_chunks(sessions, labels):
            reports.append(UpsertReport.model_validate(self._call(
                "POST", "/v1/sessions", _upsert_body(chunk, lab, labelled, split))))
            done += len(chunk)
            if progress:
                progress(done, len(sessions))
        return _merge(reports)

    def delete_sessions(self, session_ids: Sequence[str]) -> int:
        """Delete sessions by id; returns how many were in the index."""
        ids = list(session_ids)
        return sum(self._call("DELETE", "/v1/sessions", {"session_ids": list(c)})["deleted"]
                   for c in self._chunks(ids)) if ids else 0

    @overload
    def classify(self, session: Session) -> PatternPrediction: ...

    @overload
    def classify(self, session: Sequence[Session]) -> list[PatternPrediction]: ...

    def classify(self, session):
        """Label one session, or a list (returns the shape it was given)."""
        if isinstance(session, Session):
            return PatternPrediction.model_validate(self._call(
                "POST", "/v1/classify", {"session": session.model_dump(mode="json")}))
        return self.classify_many(list(session))

    def classify_many(self, sessions: Sequence[Session], *, progress: Progress | None = None
                      ) -> list[PatternPrediction]:
        """Label sessions; results in input order."""
        out: list[PatternPrediction] = []
        for chunk in self._chunks(list(sessions)):
            if chunk:
                out += _PREDICTIONS.validate_python(self._call(
                    "POST", "/v1/classify", {"sessions": _sessions(chunk)}))
            if progress:
                progress(len(out), len(sessions))
        return out

    def similar(self, *, session: Session | None = None, session_id: str | None = None,
                user_id: str | None = None, text: str | None = None, k: int = 10,
                filter: Filter | None = None, with_text: bool = False) -> list[Neighbor]:
        """Similar sessions (or shoppers, for ``user_id``), as :meth:`BehaviorRAG.similar`."""
        return _NEIGHBORS.validate_python(self._call("POST", "/v1/similar", _similar_body(
            session, session_id, user_id, text, k, filter, with_text)))

    def taxonomy(self) -> Taxonomy:
        return Taxonomy.model_validate(self._call("GET", "/v1/taxonomy"))

    def ready(self) -> dict:
        return self._call("GET", "/readyz")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """The same API as :class:`Client`, awaitable (httpx.AsyncClient). ``async with`` it."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, transport: httpx.AsyncBaseTransport | None = None,
                 **kw: Any) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, **kw)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       timeout=self._timeout, transport=transport)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = await self._http.request(method, path, json=body)
                if response.status_code not in RETRY_STATUS or attempt == self.max_retries:
                    return self._result(response)
            except RETRY_ERRORS as e:
                last = e
            except httpx.TimeoutException as e:
                raise self._gave_up(method, path, attempt + 1, e) from e
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, response))
        raise self._gave_up(method, path, self.max_retries + 1, last) from last

    async def index_sessions(self, sessions: Sequence[Session], *, split: str | None = None,
                             progress: Progress | None = None) -> UpsertReport:
        return await self._upsert(sessions, None, False, split, progress)

    async def add_labelled(self, sessions: Sequence[Session],
                           labels: Sequence[str] | None = None, *, split: str | None = "train",
                           progress: Progress | None = None) -> UpsertReport:
        return await self._upsert(sessions, labels, True, split, progress)

    async def _upsert(self, sessions, labels, labelled, split, progress) -> UpsertReport:
        reports, done = [], 0
        for chunk, lab in self._label_chunks(sessions, labels):
            reports.append(UpsertReport.model_validate(await self._call(
                "POST", "/v1/sessions", _upsert_body(chunk, lab, labelled, split))))
            done += len(chunk)
            if progress:
                progress(done, len(sessions))
        return _merge(reports)

    async def delete_sessions(self, session_ids: Sequence[str]) -> int:
        n = 0
        for c in self._chunks(list(session_ids)) if session_ids else []:
            n += (await self._call("DELETE", "/v1/sessions", {"session_ids": list(c)}))["deleted"]
        return n

    async def classify(self, session):
        """Label one session, or a list (returns the shape it was given)."""
        if isinstance(session, Session):
            return PatternPrediction.model_validate(await self._call(
                "POST", "/v1/classify", {"session": session.model_dump(mode="json")}))
        return await self.classify_many(list(session))

    async def classify_many(self, sessions: Sequence[Session], *,
                            progress: Progress | None = None) -> list[PatternPrediction]:
        out: list[PatternPrediction] = []
        for chunk in self._chunks(list(sessions)):
            if chunk:
                out += _PREDICTIONS.validate_python(await self._call(
                    "POST", "/v1/classify", {"sessions": _sessions(chunk)}))
            if progress:
                progress(len(out), len(sessions))
        return out

    async def similar(self, *, session: Session | None = None, session_id: str | None = None,
                      user_id: str | None = None, text: str | None = None, k: int = 10,
                      filter: Filter | None = None, with_text: bool = False) -> list[Neighbor]:
        return _NEIGHBORS.validate_python(await self._call("POST", "/v1/similar", _similar_body(
            session, session_id, user_id, text, k, filter, with_text)))

    async def taxonomy(self) -> Taxonomy:
        return Taxonomy.model_validate(await self._call("GET", "/v1/taxonomy"))

    async def ready(self) -> dict:
        return await self._call("GET", "/readyz")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
