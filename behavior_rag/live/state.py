"""Open live sessions, bounded: at most ``live.max_open`` of them (one more ends the least
recently active), at most ``live.max_events`` events each, events in time order.

An append is checked whole before anything changes: an event equal to one the session has
(a retried request) is skipped and counted, an event older than the session's last one is
refused with the field that names it, and a request that would pass the event cap is refused.
``journal`` (the write-ahead log) is called with what will change, under the lock and before
it changes: when it returns, the change is in the log, and only then is it applied.

Example:
    >>> from behavior_rag.synth import generate
    >>> s = generate(1, seed=2).sessions[0]
    >>> live = LiveSessions(max_open=2, max_events=100)
    >>> got = live.append("s1", s.events[:3] + s.events[:1])
    >>> got.added, got.duplicates, got.opened
    (3, 1, True)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from behavior_rag.labels.targets import InputCut
from behavior_rag.live.models import EndReason, LiveScore
from behavior_rag.live.visibility import Visibility
from behavior_rag.running_facts import RunningFacts
from behavior_rag.types import Event, Session
from behavior_rag.wire.errors import BatchTooLarge, InvalidRequest

Journal = Callable[[list[dict]], None]


class OpenSession:
    """One live session: its events, what the model sees of them (``running``: their facts,
    kept per event), and its last score."""

    __slots__ = ("session_id", "user_id", "events", "keys", "seen", "running", "touched",
                 "score", "ended")

    def __init__(self, session_id: str, user_id: str, cut: InputCut | None, *,
                 tz: str = "UTC", guard: bool = True) -> None:
        self.session_id, self.user_id = session_id, user_id
        self.events: list[Event] = []
        self.keys: set[int] = set()  # hashes of the events' JSON, for duplicates
        self.seen = Visibility(cut)
        self.running = RunningFacts(session_id, user_id, tz=tz, guard=guard)
        self.touched = time.monotonic()
        self.score: LiveScore | None = None
        self.ended: EndReason | None = None

    @property
    def visible(self) -> int:
        return self.seen.visible

    def session(self) -> Session:
        """The events so far as a :class:`Session` (the classifier cuts what it may see)."""
        return Session(session_id=self.session_id, user_id=self.user_id,
                       events=list(self.events))

    def add(self, events: Sequence[Event]) -> None:
        for e in events:
            self.events.append(e)
            self.keys.add(_key(e))
            if self.seen.add(e):
                self.running.add(e)


def _key(e: Event) -> int:
    return hash(e.model_dump_json(exclude={"session_id"}))


@dataclass
class Appended:
    """What one append did (``evicted``: sessions it ended to stay within ``max_open``)."""

    session: OpenSession
    added: int
    duplicates: int
    opened: bool
    evicted: list[OpenSession] = field(default_factory=list)


class LiveSessions:
    """The open sessions, least recently active first; thread-safe."""

    def __init__(self, *, max_open: int, max_events: int, cut: InputCut | None = None,
                 journal: Journal | None = None, tz: str = "UTC", guard: bool = True) -> None:
        self.max_open, self.max_events, self.cut = max_open, max_events, cut
        self.tz, self.guard = tz, guard  # how the featurizer reads events: running facts too
        self.journal = journal or (lambda records: None)
        self.lock = threading.Lock()
        self._open: OrderedDict[str, OpenSession] = OrderedDict()
        self.pending: list[OpenSession] = []  # ended, waiting for the next commit
        self.pending_since: float | None = None

    def __len__(self) -> int:
        return len(self._open)

    def get(self, session_id: str) -> OpenSession | None:
        return self._open.get(session_id)

    def recent(self, n: int) -> list[OpenSession]:
        """The ``n`` most recently active sessions, newest first."""
        with self.lock:
            out = []
            for s in reversed(self._open.values()):
                if len(out) >= n:
                    break
                out.append(s)
            return out

    def append(self, session_id: str, events: Sequence[Event]) -> Appended:
        """Check ``events`` whole, journal them, then append them (see the module doc)."""
        with self.lock:
            s = self._open.get(session_id)
            opened = s is None
            if s is None:
                s = self._new(session_id, events[0].user_id)
            fresh = self._check(s, events)
            evicted = list(self._oldest(len(self._open) + 1 - self.max_open)) if opened else []
            records = [{"op": "add", "sid": session_id,
                        "ev": [e.model_dump(mode="json") for e in fresh]}] if fresh else []
            records += [{"op": "end", "sid": o.session_id, "why": "evicted"} for o in evicted]
            if records:
                self.journal(records)
            for o in evicted:
                self._close(o, "evicted")
            s.add(fresh)
            s.touched = time.monotonic()
            if fresh or not opened:
                self._open[session_id] = s
                self._open.move_to_end(session_id)
            return Appended(s, len(fresh), len(events) - len(fresh), opened and bool(fresh),
                            evicted)

    def _new(self, session_id: str, user_id: str) -> OpenSession:
        return OpenSession(session_id, user_id, self.cut, tz=self.tz, guard=self.guard)

    def _check(self, s: OpenSession, events: Sequence[Event]) -> list[Event]:
        """The events to append (duplicates left out); refuses the whole request on any
        event of another user, out of time order, or past the cap. (An event's own
        ``session_id``, its source's, is kept as it is: the URL names the live session.)"""
        fresh, keys = [], set()
        last = s.events[-1].timestamp if s.events else None
        for i, e in enumerate(events):
            if e.user_id != s.user_id:
                raise InvalidRequest("every event of a live session must have the session's "
                                     f"user ({s.user_id!r})", field=f"events.{i}.user_id",
                                     value=e.user_id)
            k = _key(e)
            if k in s.keys or k in keys:
                continue
            if last is not None and e.timestamp < last:
                raise InvalidRequest(
                    f"event is older than the session's last event ({last.isoformat()}): live "
                    "events must arrive in time order; nothing of this request was appended",
                    field=f"events.{i}.timestamp", value=e.timestamp.isoformat(),
                    reason="out_of_order", last_event=last.isoformat())
            keys.add(k)
            fresh.append(e)
            last = e.timestamp
        if len(s.events) + len(fresh) > self.max_events:
            raise BatchTooLarge(f"a live session holds at most {self.max_events} events "
                                f"({len(s.events)} already, {len(fresh)} new)",
                                field="events", value=len(fresh), limit=self.max_events)
        return fresh

    def _oldest(self, n: int) -> list[OpenSession]:
        return [s for s, _ in zip(self._open.values(), range(max(n, 0)))]

    def end(self, session_id: str, reason: EndReason) -> OpenSession | None:
        """End one session (journalled); None when it is not open."""
        with self.lock:
            s = self._open.get(session_id)
            if s is not None:
                self.journal([{"op": "end", "sid": session_id, "why": reason}])
                self._close(s, reason)
            return s

    def idle(self, gap_s: float, now: float | None = None) -> list[OpenSession]:
        """End every session idle for more than ``gap_s`` seconds (journalled)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            gone = []
            for s in self._open.values():  # least recently active first
                if now - s.touched <= gap_s:
                    break
                gone.append(s)
            if gone:
                self.journal([{"op": "end", "sid": s.session_id, "why": "gap"} for s in gone])
            for s in gone:
                self._close(s, "gap")
            return gone

    def _close(self, s: OpenSession, reason: EndReason) -> None:
        del self._open[s.session_id]
        s.ended = reason
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append(s)

    def take_pending(self) -> list[OpenSession]:
        """The ended sessions waiting for a commit, handed over (see :meth:`give_back`)."""
        with self.lock:
            out, self.pending, self.pending_since = self.pending, [], None
            return out

    def give_back(self, sessions: list[OpenSession]) -> None:
        """Ended sessions whose commit failed: they wait for the next one."""
        with self.lock:
            self.pending = sessions + self.pending
            self.pending_since = self.pending_since or time.monotonic()

    def records(self) -> list[dict]:
        """The log that holds exactly what is open or waiting (call with :attr:`lock` held)."""
        out = []
        for s in [*self.pending, *self._open.values()]:
            out.append({"op": "add", "sid": s.session_id,
                        "ev": [e.model_dump(mode="json") for e in s.events]})
            if s.ended:
                out.append({"op": "end", "sid": s.session_id, "why": s.ended})
        return out

    def replay(self, records: Sequence[dict]) -> int:
        """Rebuild the sessions a log describes (nothing journalled); returns the events."""
        n = 0
        with self.lock:
            for r in records:
                sid = r["sid"]
                s = self._open.get(sid)
                if r["op"] == "end":
                    if s is not None:
                        self._close(s, r.get("why", "deleted"))
                    continue
                events = [Event.model_validate(e) for e in r["ev"]]
                if s is None and events:
                    s = self._open[sid] = self._new(sid, events[0].user_id)
                if s is not None:
                    s.add(events)
                    self._open.move_to_end(sid)
                    n += len(events)
        return n

    def all(self) -> list[OpenSession]:
        return list(self._open.values())
