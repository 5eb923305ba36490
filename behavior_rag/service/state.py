"""What the service holds: one :class:`BehaviorRAG`, a readers-writer lock over its index, and
its readiness. Every method here runs in a model-slot worker thread, never on the event loop.

Reads (classify, similar) run side by side — FAISS searches are thread-safe — while a write
(upsert, delete, save) waits for them and holds everyone else off: FAISS and the metadata store
are not safe to read while they change.

Example:
    >>> lock = RWLock()
    >>> with lock.read(), lock.read():   # readers share
    ...     pass
    >>> with lock.write():
    ...     pass
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

from behavior_rag.api import BehaviorRAG
from behavior_rag.errors import ConfigError
from behavior_rag.index.build import UpsertReport
from behavior_rag.retrieve import Neighbor
from behavior_rag.settings import ServeSettings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session
from behavior_rag.wire.errors import NotFoundError, NotReady
from behavior_rag.wire.schemas import DeleteReport, SimilarRequest, UpsertRequest

log = logging.getLogger(__name__)


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class ServiceState:
    """The facade behind the endpoints. Results are exactly what :class:`BehaviorRAG` returns."""

    def __init__(self, rag: BehaviorRAG, settings: ServeSettings) -> None:
        self.rag, self.settings = rag, settings
        self.lock = RWLock()
        self.ready = False
        self.load_error: str | None = None
        self.taxonomy: Taxonomy | None = None
        # The local LLM keeps a prompt KV cache between calls: not safe for two threads at once.
        self._llm_lock: threading.Lock | nullcontext = nullcontext()
        # run at the end of load, before /readyz says ready (e.g. live sessions' recovery)
        self.on_load: list[Callable[[], None]] = []

    def load(self) -> None:
        """Load the index, the embedder and the classifier once, at startup (for /readyz)."""
        try:
            with self.lock.write():
                _ = self.rag.index
                self.rag.embedder.embed(["warm-up"])
                try:
                    clf = self.rag.classifier
                except ConfigError:  # nothing labelled yet: the labelling queue still serves
                    clf = None       # (classify answers why, per request)
                self.taxonomy = clf.taxonomy if clf is not None else self.rag.taxonomy()
                if clf is not None and clf.llm is not None and not clf.llm.thread_safe:
                    self._llm_lock = threading.Lock()
            for hook in self.on_load:
                hook()
            self.ready = True
        except Exception as e:  # reported by /readyz; the process stays up for /healthz
            log.exception("loading the index/models failed")
            # /readyz is unauthenticated: name the error type, keep paths in the server log.
            self.load_error = f"loading the index or models failed ({type(e).__name__}); " \
                              "see the server log"

    def require_ready(self) -> None:
        if not self.ready:
            raise NotReady(self.load_error or "the index and models are still loading",
                           retry_after=self.settings.retry_after_s)

    @property
    def index_size(self) -> int:
        return len(self.rag.index) if self.ready else 0

    # ---- writes -------------------------------------------------------------------------
    def upsert(self, req: UpsertRequest) -> UpsertReport:
        """Upsert and save atomically (a crash leaves the previous index folder loadable)."""
        with self.lock.write():
            if req.labelled or req.labels is not None:
                report = self.rag.add_labelled(req.sessions, req.labels, split=req.split)
            else:
                report = self.rag.index_sessions(req.sessions, split=req.split)
            if report.embedded:
                self.rag.save()
            return report

    def delete(self, session_ids: Sequence[str]) -> DeleteReport:
        ids = list(dict.fromkeys(session_ids))
        with self.lock.write():
            missing = [s for s in ids if self.rag.index.get(s) is None]
            n = self.rag.delete_sessions(ids)
            if n:
                self.rag.save()
            return DeleteReport(deleted=n, not_found=missing, index_size=len(self.rag.index))

    def delete_one(self, session_id: str) -> DeleteReport:
        report = self.delete([session_id])
        if report.not_found:
            raise NotFoundError("session is not in the index", field="session_id",
                                value=session_id)
        return report

    # ---- reads --------------------------------------------------------------------------
    def classify(self, sessions: Sequence[Session], voters: bool = False
                 ) -> list[PatternPrediction]:
        with self.lock.read(), self._llm_lock:
            return self.rag.classify_many(list(sessions), voters=voters)

    def similar(self, req: SimilarRequest) -> list[Neighbor]:
        with self.lock.read():
            index = self.rag.index
            # Unknown ids are a 404 over HTTP; in-process they are ConfigErrors (NotFoundError
            # subclasses ConfigError, so one except clause catches both).
            if req.session_id is not None and index.get(req.session_id) is None:
                raise NotFoundError("session is not in the index", field="session_id",
                                    value=req.session_id)
            # errors name the pseudonym: a raw id is never echoed back
            if req.user_id is not None and not index.ids_of_user(self.rag.user_ids(req.user_id)):
                raise NotFoundError("user has no sessions in the index", field="user_id",
                                    value=self.rag.user_ids(req.user_id))
            return self.rag.similar(session=req.session, session_id=req.session_id,
                                    user_id=req.user_id, text=req.text, k=req.k,
                                    filter=req.filter, with_text=req.with_text)

    def profile(self, user_id: str, use_llm: bool, patterns: bool):
        with self.lock.read(), (self._llm_lock if use_llm or patterns else nullcontext()):
            if not self.rag.sessions.has_user(self.rag.user_ids(user_id)):
                raise NotFoundError("user has no sessions with events in the index",
                                    field="user_id", value=self.rag.user_ids(user_id))
            return self.rag.profile(user_id, use_llm=use_llm, patterns=patterns)
