"""Live-session routes of the service (:mod:`behavior_rag.live`), same key as every /v1 route:

* ``POST /v1/live/{session_id}/events`` — append events (``{"events": [...]}``), answered with
  the updated prediction, or ``changed: false`` when nothing the model sees moved. 422 naming
  the field for an event older than the session's last one, of another user, or past
  ``live.max_events``; an event the session already has is skipped and counted (a retry).
* ``GET /v1/live/{session_id}`` — its state (``?fresh=true``: re-score now); 404 if not open.
* ``DELETE /v1/live/{session_id}`` — end it (``?commit=true``: commit now, not with the next
  batch); 404 if not open.
* ``GET /v1/live`` — open sessions, most recently active first.
* ``/ui/live`` — the web view of the same (:mod:`behavior_rag.service.ui.live`).

An append's events are in the write-ahead log (``<index>/live/wal.log``) before it is
answered; the routes answer 503 until that log is replayed at start. Their answers carry a
``Server-Timing`` header (the service's own milliseconds).

Example:
    >>> install(app, state, slots, settings)   # in create_app, before include_router(v1)
    ...                                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import asynccontextmanager
from functools import partial

from fastapi import APIRouter, Depends, FastAPI, Query, Response

from behavior_rag.bounds import MAX_ID
from behavior_rag.errors import ConfigError
from behavior_rag.live.commit import committer
from behavior_rag.live.manager import VECTOR_NEEDS, LiveManager
from behavior_rag.live.models import LiveAnswer, LiveEnd, LiveEvents, LiveList, LiveView
from behavior_rag.live.scorer import LiveScorer
from behavior_rag.live.state import OpenSession
from behavior_rag.live.wal import WriteAheadLog
from behavior_rag.service.auth import key_dependency
from behavior_rag.service.limits import ModelSlots, check_batch
from behavior_rag.service.state import ServiceState
from behavior_rag.service.ui import live as live_view
from behavior_rag.settings import ServeSettings
from behavior_rag.types import Event
from behavior_rag.wire.errors import (
    InvalidRequest,
    NotFoundError,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from behavior_rag.wire.schemas import ErrorBody, bad_text

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often idle sessions are ended and due commits made
_ERR = {"model": ErrorBody}
ERRORS = {401: _ERR | {"description": "Missing or wrong API key"},
          422: _ERR | {"description": "Invalid request; `field` names the bad field"},
          503: _ERR | {"description": "Not ready (log being replayed) or overloaded"}}
NOT_OPEN = {404: _ERR | {"description": "No open live session with this id"}}


class LiveHolder:
    """The manager once the index is loaded and the log replayed (503 before)."""

    def __init__(self) -> None:
        self.manager: LiveManager | None = None
        self.error: str | None = None

    def get(self) -> LiveManager:
        if self.manager is None:
            raise NotReady(self.error or "live sessions are being recovered", retry_after=1)
        return self.manager


def build(state: ServiceState) -> LiveManager:
    """The live sessions of ``state``'s folder, with its log replayed."""
    rag = state.rag
    s, clf = rag.settings, rag.classifier
    model = clf.model
    live = LiveManager(
        s.live, gap_minutes=s.ingest.session_gap_minutes,
        classify=lambda sessions: state.classify(sessions),
        commit=committer(rag, s.live.on_end, state.lock.write, state.lock.read),
        wal=WriteAheadLog(rag.index_path / "live" / "wal.log", fsync=s.live.fsync),
        cut=model.target.input if model is not None and model.target is not None else None,
        vectors=bool(clf.needs() & VECTOR_NEEDS),
        # a fit swaps rag.classifier: read it per score (the read lock only where the model
        # reads the index or the store: see LiveScorer.cheap)
        scorer=LiveScorer(lambda: state.rag.classifier, state.lock.read),
        tz=s.render.timezone, guard=s.classify.strip_instructions)
    live.recover()
    return live


def install(app: FastAPI, state: ServiceState, slots: ModelSlots,
            settings: ServeSettings) -> LiveHolder:
    """Add the live routes to ``app`` and run their upkeep while it serves."""
    holder = LiveHolder()
    app.state.live = holder

    def recover() -> None:  # part of loading: /readyz turns 200 only once the log is replayed
        try:
            holder.manager = build(state)
        except ConfigError as e:  # an index with nothing to classify with yet (labelling)
            holder.error = f"live sessions need a model: {e.message}"
        except Exception as e:  # /v1/live answers 503 naming the type; the rest serves on
            log.exception("recovering live sessions failed")
            holder.error = f"recovering live sessions failed ({type(e).__name__}); see the log"
        # what loading made (index, models, the recovered sessions: ~200k objects) is kept
        # for the process's life: out of the cyclic collector's full passes, which scanned
        # it in ~150 ms — a pause inside whichever requests were running (the append p99)
        gc.freeze()

    state.on_load.append(recover)
    _upkeep(app, state, holder)
    auth = key_dependency(settings)
    router = APIRouter(prefix="/v1/live", dependencies=[Depends(auth)] if auth else [],
                       responses=ERRORS, tags=["live"])

    def ready() -> LiveManager:
        state.require_ready()
        return holder.get()

    def pseudonymised(events: list[Event]) -> list[Event]:
        ids: dict[str, str] = {}
        out = []
        for e in events:
            u = ids.get(e.user_id) or ids.setdefault(e.user_id, state.rag.user_ids(e.user_id))
            out.append(e if u == e.user_id else e.model_copy(update={"user_id": u}))
        return out

    async def scored(live: LiveManager, s: OpenSession, fresh: bool = False):
        # nothing to score, or a facts-only model on running facts (~1 ms whatever the
        # session's length): on the event loop, no model slot. A thread hop cost more than
        # the score itself: the GIL hands over every switch interval (5 ms), and p50 was 24 ms
        if live.due(s, fresh=fresh) != "score" or live.cheap:
            return live.score(s, fresh=fresh)
        try:
            return await slots.run(partial(live.score, s, fresh=fresh))
        except (Overloaded, RequestTimeout):  # the events are in: score on a later call
            return None, False, True

    @router.post("/{session_id}/events", response_model=LiveAnswer,
                 summary="Append events to a live session; the updated prediction")
    async def append(session_id: str, body: LiveEvents) -> LiveAnswer:
        live = ready()
        _check(session_id, body)
        check_batch("events", len(body.events), settings.max_batch)
        events = pseudonymised(body.events)
        # without fsync an append is a write() into the OS: no thread hop for it
        got = await asyncio.to_thread(live.append, session_id, events) if live.fsync else \
            live.append(session_id, events)
        return _json(live.answer(got, *await scored(live, got.session)))

    @router.get("/{session_id}", response_model=LiveView, responses=NOT_OPEN,
                summary="A live session's state")
    async def get(session_id: str, fresh: bool = Query(False, description="Re-score now "
                  "(a vector model re-scores only every live.rescore_every events).")
                  ) -> LiveView:
        live = ready()
        s = _open(live, session_id)
        if fresh or s.score is None:
            await scored(live, s, fresh=True)
        return live.view(s)

    @router.delete("/{session_id}", response_model=LiveEnd, responses=NOT_OPEN,
                   summary="End a live session")
    async def end(session_id: str, commit: bool = Query(False, description="Commit it to "
                  "the index now rather than with the next batch.")) -> LiveEnd:
        live = ready()
        _check(session_id)
        s = await asyncio.to_thread(live.end, session_id)
        if s is None:
            raise NotFoundError("no open live session with this id", field="session_id",
                                value=session_id)
        if commit:
            await asyncio.to_thread(live.flush)
        return LiveEnd(session_id=session_id, events=len(s.events), committed=commit)

    @router.get("", response_model=LiveList, summary="Open live sessions")
    async def listing(limit: int = Query(100, ge=1, le=1000)) -> LiveList:
        return ready().listing(limit)

    app.include_router(router)
    live_view.install(app, lambda n: ready().listing(n), settings)
    app.add_middleware(ServerTiming, prefix="/v1/live")
    metrics = app.state.metrics
    metrics.gauge("live_open", "Open live sessions.",
                  lambda: len(holder.manager.sessions) if holder.manager else 0)
    metrics.gauge("live_pending_commit", "Ended live sessions waiting for a commit.",
                  lambda: len(holder.manager.sessions.pending) if holder.manager else 0)
    return holder


def _json(answer: LiveAnswer) -> Response:
    """The answer as JSON, serialised once (the route's response_model documents it)."""
    return Response(answer.model_dump_json(), media_type="application/json")


class ServerTiming:
    """Pure ASGI middleware: answers under ``prefix`` carry ``Server-Timing: app;dur=<ms>``,
    the time from the request reaching the app to its answer (eval/bench_live.py reads it:
    the service's own share of a client's latency)."""

    def __init__(self, app, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed(message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1e3
                message["headers"] = [*message.get("headers", []),
                                      (b"server-timing", b"app;dur=%.3f" % ms)]
            await send(message)

        await self.app(scope, receive, timed)


def _check(session_id: str, body: LiveEvents | None = None) -> None:
    if len(session_id) > MAX_ID:
        raise InvalidRequest(f"session id of {len(session_id)} characters; at most {MAX_ID}",
                             field="session_id", value=session_id[:100])
    where = bad_text(session_id) or (bad_text(body) if body is not None else None)
    if where is not None:
        raise InvalidRequest("text is not valid Unicode (a lone surrogate escape such as "
                             "\\ud800)", field="session_id" if where == "body" and
                             body is None else where)


def _open(live: LiveManager, session_id: str) -> OpenSession:
    _check(session_id)
    s = live.sessions.get(session_id)
    if s is None:
        raise NotFoundError("no open live session with this id", field="session_id",
                            value=session_id)
    return s


def _upkeep(app: FastAPI, state: ServiceState, holder: LiveHolder) -> None:
    """Wrap the app's lifespan: once the index is loaded, replay the log, then end idle
    sessions and commit ended ones every ``TICK_S``; at shutdown, commit what ended."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI):
        async with inner(a) as st:
            task = asyncio.create_task(_run(state, holder))
            try:
                yield st
            finally:
                task.cancel()
                if holder.manager is not None:
                    await asyncio.to_thread(holder.manager.close)

    app.router.lifespan_context = lifespan


async def _run(state: ServiceState, holder: LiveHolder) -> None:
    while not state.ready:  # recovery runs inside the service's load (state.on_load)
        if state.load_error:
            holder.error = holder.error or state.load_error
            return
        await asyncio.sleep(0.05)
    if holder.manager is None:
        return
    while True:
        await asyncio.sleep(TICK_S)
        try:
            await asyncio.to_thread(holder.manager.tick)
        except Exception:  # they stay in the log and wait for the next try
            log.exception("committing ended live sessions failed")
