"""Replay a log through the live API: every session's events in one timeline, each sent when
its time comes (``speed`` times faster than it happened; 0: as fast as the service answers),
each session ended after its last event.

Example:
    >>> from behavior_rag import Client
    >>> from behavior_rag.synth import generate
    >>> with Client("http://127.0.0.1:8080", api_key="s3cret") as c:        # doctest: +SKIP
    ...     report = replay(c, generate(20, seed=1).sessions, speed=60)
    >>> report.events_per_s                                                 # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from behavior_rag.live.models import LiveAnswer
from behavior_rag.types import Session


class ReplayReport(BaseModel):
    """What a replay sent and how closely it kept to the log's clock."""

    sessions: int
    events: int
    changed: int = Field(description="Answers whose prediction moved.")
    duplicates: int = Field(description="Events the service already had (a re-run).")
    ended: int
    seconds: float
    events_per_s: float
    speed: float
    lag_max_s: float = Field(description="How far behind the log's clock the replay fell "
                             "(the service's answers were slower than the log's events).")


def timeline(sessions: Sequence[Session]) -> list[tuple[float, int, int]]:
    """``(unix time, session index, event index)`` of every event, in time order (a
    session's own events keep their order).

    Example:
        >>> from behavior_rag.synth import generate
        >>> t = timeline(generate(3, seed=1).sessions)
        >>> all(a[0] <= b[0] for a, b in zip(t, t[1:]))
        True
    """
    per = ([(e.timestamp.timestamp(), i, j) for j, e in enumerate(s.events)]
           for i, s in enumerate(sessions))
    return list(heapq.merge(*per))


def replay(client, sessions: Sequence[Session], *, speed: float = 1.0, end: bool = True,
           on_answer: Callable[[LiveAnswer], None] | None = None) -> ReplayReport:
    """Send ``sessions`` through ``client.live_append`` (one event per request) at ``speed``."""
    plan = timeline(sessions)
    left = [s.n_events for s in sessions]
    start, t0 = time.monotonic(), plan[0][0] if plan else 0.0
    changed = dups = ended = 0
    lag = 0.0
    for ts, i, j in plan:
        if speed > 0:
            due = start + (ts - t0) / speed
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            lag = max(lag, -wait)
        s = sessions[i]
        answer = client.live_append(s.session_id, [s.events[j]])
        changed += answer.changed
        dups += answer.duplicates
        if on_answer is not None:
            on_answer(answer)
        left[i] -= 1
        if end and not left[i]:
            client.live_end(s.session_id)
            ended += 1
    took = time.monotonic() - start
    return ReplayReport(sessions=len(sessions), events=len(plan), changed=changed,
                        duplicates=dups, ended=ended, seconds=round(took, 3),
                        events_per_s=round(len(plan) / took, 1) if took else 0.0,
                        speed=speed, lag_max_s=round(lag, 3))
