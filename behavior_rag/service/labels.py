"""The labelling queue over HTTP: ``GET /v1/labels/queue``, ``POST /v1/labels``,
``GET /v1/labels``, ``POST /v1/labels/fit`` (fit on the label set in the background; the
queue then ranks by the new model) (and the web view's ``/ui/label``, :mod:`behavior_rag.service.ui.label`).

A label is acknowledged only after the label set holding it is committed (fsynced, then
``config.json`` renamed): an answered ``POST`` survives a SIGKILL of the server. Label writes
take the service's write lock like upserts, so classification never sees a half-written
folder. ``who`` is the API key's name (``serve.key_name``).

Example:
    $ curl -H "X-API-Key: $KEY" "http://127.0.0.1:8080/v1/labels/queue?n=5&detail=1"
    $ curl -H "X-API-Key: $KEY" -d '{"labels": [{"session_id": "s_1", "label": "deal_hunter"}]}' \
        http://127.0.0.1:8080/v1/labels
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from behavior_rag.annotate import LabelDesk
from behavior_rag.annotate.queue import n_clusters
from behavior_rag.api import FitReport
from behavior_rag.errors import BehaviorRagError, ConfigError
from behavior_rag.evaluation import split_by_user
from behavior_rag.labels import LabelsAdded
from behavior_rag.labels.agreement import llm_agreement
from behavior_rag.labels.book import Training
from behavior_rag.service.limits import ModelSlots, check_batch
from behavior_rag.service.state import ServiceState
from behavior_rag.settings import ServeSettings
from behavior_rag.wire.errors import NotFoundError, NotReady
from behavior_rag.wire.schemas import LabelRequest, LabelSummary, QueuePage

log = logging.getLogger(__name__)
NEAR = 50  # nearest sessions searched per queue entry for labelled ones to show
MAX_SKIPPED = 10_000
WAIT_WARM_S = 10.0  # how long a queue request waits for the warm-up before a 503  # ids passed over with "skip", per service (oldest forgotten first)
WARM_N = 10  # the queue's default page: the cluster count warmed for
TRUSTED = ("human", "file", "target", "rule")  # a session labelled so leaves the queue


class FitJob(BaseModel):
    """``/v1/labels/fit``: fitting on the label set, in the background."""

    state: Literal["idle", "running", "done", "failed"] = "idle"
    started: datetime | None = None
    finished: datetime | None = None
    training: Training | None = None
    report: FitReport | None = None
    error: str | None = None


class LabelService:
    """The queue's state in the service: the desk (clusters and margins, cached) and the
    sessions skipped for now."""

    def __init__(self, state: ServiceState, settings: ServeSettings) -> None:
        self.state, self.settings = state, settings
        self.skipped: deque[str] = deque(maxlen=MAX_SKIPPED)
        self._desk: LabelDesk | None = None
        self._warm: threading.Thread | None = None
        self._warm_lock = threading.Lock()
        self.job = FitJob()

    @property
    def rag(self):
        return self.state.rag

    def desk(self) -> LabelDesk:
        if self._desk is None:
            self._desk = LabelDesk(self.rag.embedder, self.state.taxonomy)
        return self._desk

    def classifier(self):
        try:
            return self.rag.classifier
        except ConfigError:  # nothing labelled and no model yet: cold start
            return None

    def warming(self) -> bool:
        """Start what the queue needs and a request may not wait for — clustering the
        index's sessions, and after a fit the new model's margins over them — in the
        background if it is not done yet; True while it runs."""
        with self._warm_lock:
            if self._warm is not None and self._warm.is_alive():
                return True
            desk = self.desk()
            pool = desk.pool(list(self.rag.sessions.values()))
            clf = self.classifier()
            margins = clf is not None and clf.model is not None and not desk.has_margins(clf)
            labelled = len(set(self.rag.labels.current().latest()) & {s.session_id
                                                                       for s in pool})
            k = n_clusters(labelled, WARM_N, len(pool))
            if len(pool) < 10 or desk.has_clusters(pool, k) and not margins:
                return False

            def warm() -> None:
                desk.clusters(pool)
                desk.fine(pool, k)
                if margins:
                    with self.state.lock.read():
                        desk.margins(clf, pool)

            self._warm = threading.Thread(target=warm, daemon=True, name="label-queue-warm")
            self._warm.start()
            return True

    def queue(self, n: int, detail: int, llm: bool) -> QueuePage:
        # a small index warms in a second or two: wait for it rather than answer 503 at once
        if self.warming() and not self._waited(WAIT_WARM_S):
            raise NotReady("the labelling queue is clustering the index's sessions or "
                           "ranking them by the new model; try again in a few seconds",
                           retry_after=self.settings.retry_after_s)
        with self.state.lock.read():
            labels = self.rag.labels.current()
            trusted = labels.model_copy(update={"events": tuple(
                e for e in labels.events if e.source in TRUSTED)})
            clf = self.classifier()
            order = self.desk().order(list(self.rag.sessions.values()), trusted, clf, n,
                                      skip=list(self.skipped))
            items = [self.desk().item(e, self.rag.sessions[e.session_id], labels, clf,
                                      llm=llm, similar=self.rag.similar(
                                          session_id=e.session_id, k=NEAR))
                     for e in order.entries[:detail]]
            return QueuePage(order=order, items=items)

    def _waited(self, seconds: float) -> bool:
        """Whether the warm-up ended within ``seconds``."""
        warm = self._warm
        if warm is not None:
            warm.join(seconds)
        return warm is None or not warm.is_alive()

    def add(self, req: LabelRequest) -> LabelsAdded:
        with self.state.lock.write():
            return self.rag.labels.add(req.labels, source="human", who=self.settings.key_name)

    def fit(self) -> FitJob:
        """Start fitting on the index's sessions by the label set (as `fit --index` does:
        latest label per session, 20 % of the labelled users as dev), unless a fit runs.
        It holds the write lock: requests wait for it (and the model they then get is new)."""
        with self._warm_lock:
            if self.job.state != "running":
                self.job = FitJob(state="running", started=datetime.now(timezone.utc))
                threading.Thread(target=self._fit, daemon=True, name="label-fit").start()
            return self.job

    def _fit(self) -> None:
        try:
            with self.state.lock.write():
                train, summary = self.rag.labels.training(list(self.rag.sessions.values()))
                self.job = self.job.model_copy(update={"training": summary})
                sp = split_by_user(train, seed=0, dev_frac=0.2, test_frac=0.0)
                report = self.rag.fit(sp.train, sp.dev)
                self.state.taxonomy = self.rag.classifier.taxonomy
            self.job = self.job.model_copy(update={"state": "done", "report": report,
                                                   "finished": datetime.now(timezone.utc)})
        except BehaviorRagError as e:
            self.job = self.job.model_copy(update={"state": "failed", "error": str(e),
                                                   "finished": datetime.now(timezone.utc)})
        except Exception as e:  # reported by GET /v1/labels/fit; the service keeps serving
            log.exception("fitting on the label set failed")
            self.job = self.job.model_copy(update={
                "state": "failed", "error": f"{type(e).__name__}: see the server log",
                "finished": datetime.now(timezone.utc)})

    def skip(self, session_id: str) -> None:
        if session_id not in self.rag.sessions:
            raise NotFoundError("session is not in the index", field="session_id",
                                value=session_id)
        self.skipped.append(session_id)

    def summary(self) -> LabelSummary:
        with self.state.lock.read():
            book = self.rag.labels
            cur = book.current()
            return LabelSummary(events=len(cur), sessions=len(cur.latest()),
                                by_source=cur.counts(), taxonomy=book.taxonomy.name,
                                llm_agreement=llm_agreement(cur, book.heads_rate()))


def install(v1: APIRouter, state: ServiceState, slots: ModelSlots,
            settings: ServeSettings) -> LabelService:
    """Add the label routes to ``v1`` (its auth applies); returns the service the web view
    shares."""
    svc = LabelService(state, settings)

    @v1.get("/labels/queue", response_model=QueuePage, summary="Sessions to label next")
    async def queue(n: int = Query(10, ge=1, le=200), detail: int = Query(1, ge=0, le=10),
                    llm: bool = Query(False, description="Ask the LLM for a suggestion "
                                      "too (slow on the embedded CPU model).")) -> QueuePage:
        state.require_ready()
        return await slots.run(svc.queue, n, detail, llm)

    @v1.post("/labels", response_model=LabelsAdded, summary="Add an analyst's labels")
    async def add(req: LabelRequest) -> LabelsAdded:
        state.require_ready()
        check_batch("labels", len(req.labels), settings.max_batch)
        return await slots.run(svc.add, req)

    @v1.post("/labels/fit", response_model=FitJob, status_code=202,
             summary="Fit on the label set (background)")
    async def fit() -> FitJob:
        state.require_ready()
        return svc.fit()

    @v1.get("/labels/fit", response_model=FitJob, summary="The last fit on the label set")
    async def fit_status() -> FitJob:
        return svc.job

    @v1.get("/labels", response_model=LabelSummary, summary="The label set")
    async def summary() -> LabelSummary:
        state.require_ready()
        return await slots.run(svc.summary)

    return svc
