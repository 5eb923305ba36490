"""The FastAPI app: routes only; limits, auth, errors and metrics live in their own modules.

Routes (statuses besides 200; every /v1 route also 401 without the key, 413 for a body over
``max_body_bytes``, 422 for invalid input naming the field, 503 when overloaded or loading):

* ``POST /v1/sessions`` — upsert a batch, labelled or not, then save the index atomically.
* ``DELETE /v1/sessions`` — delete by id (body ``session_ids`` or repeated ``?session_id=``).
* ``DELETE /v1/sessions/{session_id}`` — delete one session (404 when it is not indexed).
* ``POST /v1/classify`` — ``session`` -> one PatternPrediction, ``sessions`` -> a list (504
  when the model call outlives ``request_timeout_s``).
* ``POST /v1/similar`` — by session, session_id, user_id or text (404 for unknown ids; 504).
* ``GET /v1/taxonomy`` — the labels the classifier uses.
* ``/ui/`` — the web view (:mod:`behavior_rag.service.ui`): a login form for the same key, then
  overview, session, similar-shopper and profile pages (HTML, not in the OpenAPI schema).
* ``GET /healthz`` (process up), ``GET /readyz`` (index and models loaded; 503 before),
  ``GET /metrics`` (Prometheus text) — no key needed, they reveal no data.

One folder, one service: a second service on a folder another process serves refuses to start
(its index would never see the first one's commits, and every write would be a 409).

Server-side faults are 500 (a broken index folder) and never carry internals in the body.

Example:
    >>> from behavior_rag import BehaviorRAG
    >>> from behavior_rag.settings import ServeSettings
    >>> app = create_app(BehaviorRAG(index_path="indexes/synth"),
    ...                  ServeSettings(api_key="s3cret"))                 # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8080)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, Body, Depends, FastAPI, Query
from fastapi.responses import PlainTextResponse

from behavior_rag.api import BehaviorRAG
from behavior_rag.index.build import UpsertReport
from behavior_rag.index.lock import served
from behavior_rag.profile import UserProfile
from behavior_rag.resources import __version__
from behavior_rag.retrieve import Neighbor
from behavior_rag.service import errors, labels, live, ui
from behavior_rag.service.auth import check_auth_config, key_dependency
from behavior_rag.service.errors import already_served
from behavior_rag.service.limits import BodyLimitMiddleware, ModelSlots, check_batch
from behavior_rag.service.logs import install_access_log_filter
from behavior_rag.service.metrics import Metrics, MetricsMiddleware
from behavior_rag.service.state import ServiceState
from behavior_rag.settings import ServeSettings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session
from behavior_rag.wire.errors import InvalidRequest
from behavior_rag.wire.schemas import (
    ClassifyRequest,
    DeleteReport,
    DeleteRequest,
    ErrorBody,
    Health,
    Ready,
    SimilarRequest,
    UpsertRequest,
    bad_text,
)

log = logging.getLogger(__name__)

_ERR = {"model": ErrorBody}
V1_ERRORS = {401: _ERR | {"description": "Missing or wrong API key"},
             413: _ERR | {"description": "Body larger than serve.max_body_bytes"},
             422: _ERR | {"description": "Invalid request; `field` names the bad field"},
             503: _ERR | {"description": "Overloaded or not ready (see Retry-After)"}}
MODEL_ERRORS = {504: _ERR | {"description": "The model call outlived serve.request_timeout_s"}}


def create_app(rag: BehaviorRAG, settings: ServeSettings) -> FastAPI:
    """The service over ``rag``. Loading starts with the server; ``/readyz`` says when done.

    Raises :class:`~behavior_rag.errors.ConfigError` for a configuration without an API key
    (see :mod:`behavior_rag.service.auth`).
    """
    check_auth_config(settings)
    install_access_log_filter(rag.user_ids)
    metrics = Metrics()
    state = ServiceState(rag, settings)
    slots = ModelSlots(settings.max_concurrency, acquire_timeout_s=settings.acquire_timeout_s,
                       request_timeout_s=settings.request_timeout_s,
                       retry_after_s=settings.retry_after_s, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if served(rag.index_path):
            state.load_error = already_served(rag.index_path).message
            raise already_served(rag.index_path)
        # The service owns the folder's writes: a CLI writer is told so instead of committing
        # under it (and its index would go stale here).
        rag.serve_folder(f"behavior-rag serve on {settings.host}:{settings.port}")
        # Load in the background so /healthz answers at once; /readyz turns 200 when done.
        app.state.loader = asyncio.create_task(asyncio.to_thread(state.load))
        try:
            yield
        finally:
            slots.close()
            rag.stop_serving()

    app = FastAPI(title="behavior_rag", version=__version__, lifespan=lifespan,
                  description="Classify e-commerce sessions and find similar shoppers.")
    app.state.service, app.state.metrics, app.state.slots = state, metrics, slots
    errors.install(app, settings.retry_after_s)
    auth = key_dependency(settings)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(auth)] if auth else [],
                   responses=V1_ERRORS)

    @v1.post("/sessions", response_model=UpsertReport, summary="Upsert sessions and save")
    async def upsert_sessions(req: UpsertRequest) -> UpsertReport:
        state.require_ready()
        check_batch("sessions", len(req.sessions), settings.max_batch)
        _unique(req.sessions)
        _unicode(req)
        return await slots.run(state.upsert, req)

    @v1.delete("/sessions", response_model=DeleteReport, summary="Delete sessions by id")
    async def delete_sessions(body: DeleteRequest | None = Body(None),
                              session_id: list[str] = Query([], description="Repeatable.")
                              ) -> DeleteReport:
        state.require_ready()
        ids = [*(body.session_ids if body else []), *session_id]
        if not ids:
            raise InvalidRequest("give session ids: body {\"session_ids\": [...]} or "
                                 "?session_id=...", field="session_ids")
        check_batch("session_ids", len(ids), settings.max_batch)
        _unicode(ids, "session_ids")
        return await slots.run(state.delete, ids)

    @v1.delete("/sessions/{session_id:path}", response_model=DeleteReport,
               summary="Delete one session",
               responses={404: _ERR | {"description": "The session is not in the index"}})
    async def delete_session(session_id: str) -> DeleteReport:
        state.require_ready()
        _unicode(session_id, "session_id")
        return await slots.run(state.delete_one, session_id)

    @v1.post("/classify", response_model=PatternPrediction | list[PatternPrediction],
             responses=MODEL_ERRORS, summary="Label one session or a batch")
    async def classify(req: ClassifyRequest):
        state.require_ready()
        _unicode(req)
        if req.session is not None:
            return (await slots.run(state.classify, [req.session], req.voters))[0]
        check_batch("sessions", len(req.sessions), settings.max_batch)
        return await slots.run(state.classify, req.sessions, req.voters)

    @v1.post("/similar", response_model=list[Neighbor], summary="Similar sessions or shoppers",
             responses=MODEL_ERRORS | {404: _ERR | {"description": "Unknown session or user"}})
    async def similar(req: SimilarRequest) -> list[Neighbor]:
        state.require_ready()
        _unicode(req)
        return await slots.run(state.similar, req)

    @v1.get("/profiles/{user_id}", response_model=UserProfile, summary="A user's profile",
            responses=MODEL_ERRORS | {404: _ERR | {"description": "Unknown user"}})
    async def profile(user_id: str, use_llm: bool = False, patterns: bool = False
                      ) -> UserProfile:
        state.require_ready()
        _unicode(user_id, "user_id")
        return await slots.run(state.profile, user_id, use_llm, patterns)

    @v1.get("/taxonomy", response_model=Taxonomy, summary="The classifier's labels")
    async def taxonomy() -> Taxonomy:
        state.require_ready()
        return state.taxonomy

    live.install(app, state, slots, settings)
    app.state.labels = labels.install(v1, state, slots, settings)
    app.include_router(v1)
    ui.install(app, state, slots, settings)

    @app.get("/healthz", response_model=Health, summary="The process is up")
    async def healthz() -> Health:
        return Health()

    @app.get("/readyz", response_model=Ready, summary="Index loaded and models warm",
             responses={503: _ERR | {"description": "Still loading, or loading failed"}})
    async def readyz() -> Ready:
        state.require_ready()
        info = rag.embedder.info
        return Ready(ready=True, index_size=state.index_size, embedder=info.id,
                     backend=info.backend, llm=rag.settings.llm.backend)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    metrics.gauge("model_slots_busy", "Model slots in use.", lambda: slots.busy)
    metrics.gauge("model_slots", "Model slots (serve.max_concurrency).", lambda: slots.n)
    metrics.gauge("ready", "1 once the index and models are loaded.", lambda: int(state.ready))
    metrics.gauge("index_sessions", "Sessions in the index.", lambda: state.index_size)
    # Added last = outermost: metrics see the 413s the body limit sends before routing.
    # (Included routers are not listed flat in app.routes; the OpenAPI paths are, cached.)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics,
                       known_paths=lambda: set(app.openapi()["paths"]))
    return app


def _unique(sessions: list[Session]) -> None:
    # Two versions of one session in a batch would be ambiguous (FAISS refuses them, too late).
    seen: dict[str, int] = {}
    for i, s in enumerate(sessions):
        if s.session_id in seen:
            raise InvalidRequest(f"session id {s.session_id!r} appears twice (also at "
                                 f"sessions.{seen[s.session_id]})",
                                 field=f"sessions.{i}.session_id", value=s.session_id)
        seen[s.session_id] = i


def _unicode(value, prefix: str = "") -> None:
    where = bad_text(value)
    if where is not None:
        field = f"{prefix}.{where}" if prefix and where != "body" else (prefix or where)
        raise InvalidRequest("text is not valid Unicode (a lone surrogate escape such as "
                             "\\ud800)", field=field)
