"""Live sessions end to end: append (journalled), score, end, commit, recover.

* **Append** (:meth:`LiveManager.append`): checked and journalled in the write-ahead log
  (:mod:`behavior_rag.live.wal`, the commit point of an acknowledged event), then applied.
* **Score** (:meth:`LiveManager.score`): from the session's running facts, kept per event
  (:mod:`behavior_rag.live.scorer`: the batch path's prediction at O(events added), not
  O(session)); where that does not apply (a model that may ask the LLM, a refit that moved
  the prediction point) through ``classify`` on the whole session, e.g. the service's. Only
  when the events the model may see changed (:mod:`behavior_rag.live.visibility`): else the
  answer is a cheap "unchanged". A model that reads vectors or neighbours is re-scored every
  ``live.rescore_every`` visible events, not per event (an embedding costs two orders of
  magnitude more than a facts-only prediction; eval/reports/bench_live.md).
* **End**: by ``DELETE``, after ``live.gap_minutes`` without an append, or by eviction at
  ``live.max_open``; ended sessions are committed in batches (:mod:`behavior_rag.live.commit`)
  and then the log is rewritten without them.
* **Recover** (:meth:`LiveManager.recover`): at start, the log's sessions are open again and
  the ended ones wait for the next commit.

Example:
    >>> live = LiveManager.for_rag(rag, wal_path)                         # doctest: +SKIP
    >>> live.recover()                                                   # doctest: +SKIP
    >>> got = live.append("s1", events); live.answer(got, *live.score(got.session))
    ...                                                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from behavior_rag.api import BehaviorRAG
from behavior_rag.labels.targets import InputCut
from behavior_rag.live.commit import Commit, committer, merge
from behavior_rag.live.models import LiveAnswer, LiveList, LiveScore, LiveView
from behavior_rag.live.scorer import LiveScorer
from behavior_rag.live.state import Appended, LiveSessions, OpenSession
from behavior_rag.live.wal import WriteAheadLog
from behavior_rag.settings import LiveSettings
from behavior_rag.types import Event, PatternPrediction, Session

log = logging.getLogger(__name__)

Classify = Callable[[list[Session]], list[PatternPrediction]]
VECTOR_NEEDS = frozenset({"vector", "neighbors"})


class LiveManager:
    """Open sessions, their log and their commits, over a ``classify`` and a ``commit``."""

    def __init__(self, settings: LiveSettings, *, gap_minutes: float, classify: Classify,
                 commit: Commit, wal: WriteAheadLog | None = None, cut: InputCut | None = None,
                 vectors: bool = False, scorer: LiveScorer | None = None, tz: str = "UTC",
                 guard: bool = True) -> None:
        self.settings, self.classify, self.commit, self.wal = settings, classify, commit, wal
        self.scorer = scorer  # None: every score classifies the whole session
        self.gap_s = 60.0 * (settings.gap_minutes or gap_minutes)
        self.vectors = vectors  # the model reads vectors: re-score at checkpoints
        self.sessions = LiveSessions(max_open=settings.max_open,
                                     max_events=settings.max_events, cut=cut,
                                     journal=wal.append if wal is not None else None,
                                     tz=tz, guard=guard)
        self._commit_lock = threading.Lock()
        self.committed = 0  # sessions committed since start

    @classmethod
    def for_rag(cls, rag: BehaviorRAG, wal_path: Path | None, **kw) -> LiveManager:
        """Over a facade in this process (no service): its classifier and folder.

        Example:
            >>> live = LiveManager.for_rag(rag, rag.index_path / "live" / "wal.log")
            ...                                                           # doctest: +SKIP
        """
        s = rag.settings
        model = rag.classifier.model
        return cls(s.live, gap_minutes=s.ingest.session_gap_minutes,
                   classify=rag.classify_many, commit=kw.pop("commit", None) or
                   committer(rag, s.live.on_end),
                   wal=WriteAheadLog(wal_path, fsync=s.live.fsync) if wal_path else None,
                   cut=model.target.input if model is not None and model.target else None,
                   vectors=bool(rag.classifier.needs() & VECTOR_NEEDS),
                   scorer=LiveScorer(lambda: rag.classifier), tz=s.render.timezone,
                   guard=s.classify.strip_instructions, **kw)

    @property
    def cheap(self) -> bool:
        """Whether a score costs about a millisecond whatever the session's length (a
        facts-only model on running facts): the service then scores without a thread hop."""
        return self.scorer is not None and self.scorer.cheap() and self._known()

    def _known(self) -> bool:
        """Whether the scorer gives the batch path's prediction from running facts."""
        live = self.sessions
        return self.scorer is not None and self.scorer.usable(live.cut, guard=live.guard,
                                                              tz=live.tz)

    @property
    def fsync(self) -> bool:
        """Whether an append waits for the disk (else only for a write into the OS)."""
        return self.wal is not None and self.wal.fsync

    # ---- appending and scoring ------------------------------------------------------------
    def append(self, session_id: str, events: Sequence[Event]) -> Appended:
        """Append (user ids already pseudonymised); durable when this returns."""
        got = self.sessions.append(session_id, events)
        self._durable()
        return got

    def _durable(self) -> None:
        """Return once what was journalled is on disk (``live.fsync``; else it is in the
        OS already, safe from a killed process)."""
        if self.wal is not None:
            self.wal.sync(self.wal.last)

    def score(self, s: OpenSession, *, fresh: bool = False) -> tuple[LiveScore | None, bool,
                                                                      bool]:
        """``(score, changed, pending)``: re-scored only if the visible events changed
        (a vector-reading model: by ``rescore_every``, or ``fresh``)."""
        due = self.due(s, fresh=fresh)
        if due != "score":
            return s.score, False, due == "pending"
        known = self._known()
        with self.sessions.lock:  # one moment of the session (appends may go on meanwhile)
            prev, visible, n = s.score, s.visible, len(s.events)
            snap = s.running.snapshot() if known else None
            whole = None if known else s.session()
        pred = self.scorer(snap) if self.scorer is not None and snap is not None else \
            self.classify([whole])[0]
        score = LiveScore.of(pred, n, visible)
        with self.sessions.lock:
            if s.score is None or s.score.events <= score.events:
                s.score = score
        return score, score.moved(prev), False

    def due(self, s: OpenSession, *, fresh: bool = False) -> str:
        """``unchanged`` (the model would see the same events), ``pending`` (a vector model
        between re-scores) or ``score``. Cheap: no classifier call."""
        prev = s.score
        if prev is not None and prev.visible == s.visible:
            return "unchanged"
        if self.vectors and prev is not None and not fresh and \
                s.visible - prev.visible < self.settings.rescore_every:
            return "pending"
        return "score"

    @staticmethod
    def answer(got: Appended, score: LiveScore | None, changed: bool, pending: bool
               ) -> LiveAnswer:
        """The answer to an append (``score`` None: not scored, the service was busy)."""
        s = got.session
        return LiveAnswer(session_id=s.session_id, user_id=s.user_id, added=got.added,
                          duplicates=got.duplicates, events=len(s.events), visible=s.visible,
                          changed=changed, prediction=score if changed else None,
                          pending=pending or score is None, opened=got.opened)

    def view(self, s: OpenSession) -> LiveView:
        """What ``GET /v1/live/{id}`` shows of an open session."""
        idle = time.monotonic() - s.touched
        score = s.score
        return LiveView(session_id=s.session_id, user_id=s.user_id, events=len(s.events),
                        visible=s.visible, first_event=s.events[0].timestamp if s.events
                        else None, last_event=s.events[-1].timestamp if s.events else None,
                        idle_s=round(idle, 3), ends_in_s=round(max(self.gap_s - idle, 0), 3),
                        prediction=score, pending=score is None or score.visible != s.visible)

    def listing(self, n: int = 100) -> LiveList:
        """The ``n`` most recently active open sessions."""
        return LiveList(open=len(self.sessions), pending_commit=len(self.sessions.pending),
                        sessions=[self.view(s) for s in self.sessions.recent(n)])

    # ---- ending and committing ------------------------------------------------------------
    def end(self, session_id: str) -> OpenSession | None:
        """End one session (``DELETE``); it waits for the next commit."""
        s = self.sessions.end(session_id, "deleted")
        self._durable()
        return s

    def tick(self, now: float | None = None) -> int:
        """End idle sessions; commit the ended ones when due. Returns sessions committed."""
        if self.sessions.idle(self.gap_s, now):
            self._durable()
        since = self.sessions.pending_since
        now = time.monotonic() if now is None else now
        due = len(self.sessions.pending) >= self.settings.commit_max or (
            since is not None and now - since >= self.settings.commit_every_s)
        return self.flush() if due else 0

    def flush(self) -> int:
        """Commit every ended session now, then rewrite the log without them."""
        with self._commit_lock:
            batch = self.sessions.take_pending()
            if not batch:
                return 0
            try:
                self.commit(merge([s.session() for s in batch], []))
            except Exception:
                self.sessions.give_back(batch)
                raise
            self.committed += len(batch)
            self.checkpoint()
            return len(batch)

    def checkpoint(self) -> None:
        """Rewrite the log with exactly the open and waiting sessions (truncates it)."""
        if self.wal is None:
            return
        with self.sessions.lock:
            self.wal.rewrite(self.sessions.records())

    def recover(self) -> int:
        """Open again what the log holds (ended ones wait for a commit); returns events."""
        if self.wal is None:
            return 0
        with self._commit_lock:
            n = self.sessions.replay(self.wal.read())
            self.checkpoint()  # drops a torn tail before anything is appended after it
        if n:
            log.info("live sessions: recovered %d events of %d open and %d ended sessions",
                     n, len(self.sessions), len(self.sessions.pending))
        return n

    def close(self) -> None:
        """Commit what ended (open sessions stay in the log for the next start)."""
        try:
            self.flush()
        finally:
            if self.wal is not None:
                self.wal.close()
