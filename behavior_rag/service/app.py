"""The FastAPI app: routes only; limits, auth, errors and metrics live in their own modules.

=========================  ===================================================  ===============
route                      does                                                 statuses
=========================  ===================================================  ===============
``POST /v1/sessions``      upsert a batch (labelled or not), save atomically    200 401 413 422 503
``DELETE /v1/sessions``    delete ids (body ``session_ids`` or ``?session_id``) 200 401 413 422 503
``POST /v1/classify``      one session -> prediction; ``sessions`` -> list      200 401 413 422 503 504
``POST /v1/similar``       by session, session_id, user_id or text              200 401 404 413 422 503 504
``GET /v1/taxonomy``       the labels the classifier uses                       200 401 503
``GET /healthz``           the process is up (no auth)                          200
``GET /readyz``            index loaded and embedder warm (no auth)             200 503
``GET /metrics``           Prometheus text (no auth)                            200
=========================  ===================================================  ===============

Example:
    >>> from behavior_rag import BehaviorRAG, Settings
    >>> app = create_app(BehaviorRAG(index_path="indexes/synth"),
    ...                  Settings().serve.model_copy(update={"api_key": "s3cret"}))  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8080)           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, Body, Depends, FastAPI, Query
from fastapi.responses import PlainTextResponse

from behavior_rag.api import BehaviorRAG
from behavior_rag.index.build import UpsertReport
from behavior_rag.retrieve import Neighbor
from behavior_rag.service import errors
from behavior_rag.service.auth import check_auth_config, key_dependency
from behavior_rag.service.errors import InvalidRequest
from behavior_rag.service.limits import BodyLimitMiddleware, ModelSlots, check_batch
from behavior_rag.service.metrics import Metrics, MetricsMiddleware
from behavior_rag.service.schemas import (
    ClassifyRequest,
    DeleteReport,
    DeleteRequest,
    ErrorBody,
    Health,
    Ready,
    SimilarRequest,
    UpsertRequest,
)
from behavior_rag.service.state import ServiceState
from behavior_rag.settings import ServeSettings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session

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
    from behavior_rag import __version__

    check_auth_config(settings)
    metrics = Metrics()
    state = ServiceState(rag, settings)
    slots = ModelSlots(settings.max_concurrency, acquire_timeout_s=settings.acquire_timeout_s,
                       request_timeout_s=settings.request_timeout_s,
                       retry_after_s=settings.retry_after_s, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load in the background so /healthz answers at once; /readyz turns 200 when done.
        app.state.loader = asyncio.create_task(asyncio.to_thread(state.load))
        try:
            yield
        finally:
            slots.close()

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
        return await slots.run(state.delete, ids)

    @v1.post("/classify", response_model=PatternPrediction | list[PatternPrediction],
             responses=MODEL_ERRORS, summary="Label one session or a batch")
    async def classify(req: ClassifyRequest):
        state.require_ready()
        if req.session is not None:
            return (await slots.run(state.classify, [req.session]))[0]
        check_batch("sessions", len(req.sessions), settings.max_batch)
        return await slots.run(state.classify, req.sessions)

    @v1.post("/similar", response_model=list[Neighbor], summary="Similar sessions or shoppers",
             responses=MODEL_ERRORS | {404: _ERR | {"description": "Unknown session or user"}})
    async def similar(req: SimilarRequest) -> list[Neighbor]:
        state.require_ready()
        return await slots.run(state.similar, req)

    @v1.get("/taxonomy", response_model=Taxonomy, summary="The classifier's labels")
    async def taxonomy() -> Taxonomy:
        state.require_ready()
        return state.taxonomy

    app.include_router(v1)

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
    known = {getattr(r, "path", "") for r in app.routes}
    # Added last = outermost: metrics see the 413s the body limit sends before routing.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=lambda: known)
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
