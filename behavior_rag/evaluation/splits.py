"""Train / dev / test parts of labelled sessions: by user (the eval's default) or by time.

* ``user``: a ``test_frac`` share of the users (shuffled with ``seed``) is the test part; a
  ``dev_frac`` share of the remaining users (shuffled with ``seed + 1``) is the dev part. No
  user has sessions in two parts. This is the split ``behavior-rag eval`` has always made.
* ``time``: train on earlier days, test on later ones, the protocol production implies. The test
  part is the sessions that start on or after a day boundary (midnight in the sessions' own
  time zone) chosen so that it holds close to ``test_frac`` of the sessions; the dev part is the
  days just before it, close to ``dev_frac`` of the rest. An earlier part keeps only sessions
  whose outcome was known before the next part begins (``known_at``: the session's end, or
  later for look-ahead labels); the others straddle a boundary and are dropped and counted.

Example:
    >>> from behavior_rag.synth import generate
    >>> parts, info = split_parts(generate(200, seed=1).sessions, "time", seed=0)
    >>> max(s.start for s in parts.train) < min(s.start for s in parts.test)
    True
    >>> info.by, info.sizes["test"] == len(parts.test)
    ('time', True)
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError
from behavior_rag.evaluation.tasks import Split, split_by_user
from behavior_rag.labels.targets import Target
from behavior_rag.types import Session

SplitBy = Literal["user", "time"]
SPLITS: tuple[str, ...] = ("user", "time")
KnownAt = Callable[[Session], datetime]


class SplitInfo(BaseModel):
    """How sessions were split, in words a report can print (:meth:`protocol`)."""

    by: SplitBy
    seed: int = 0
    dev_frac: float
    test_frac: float
    timezone: str | None = Field(None, description="time: the zone of the day boundaries.")
    dev_from: datetime | None = Field(None, description="time: the dev part starts here.")
    test_from: datetime | None = Field(None, description="time: the test part starts here.")
    dropped_straddling: int = Field(0, description="time: sessions of an earlier part whose "
                                    "outcome was known only after the next part began.")
    sizes: dict[str, int] = Field(default_factory=dict)

    def protocol(self) -> str:
        """One sentence for a report, e.g. ``split by user (seed 0): test 25%; ...``."""
        if self.by == "user":
            return (f"split by user (seed {self.seed}): test {self.test_frac:.0%}; validation "
                    f"= {self.dev_frac:.0%} of the training part (by user, seed "
                    f"{self.seed + 1})")
        test = f", test from {_day(self.test_from)}" if self.test_frac else ""
        return (f"split by time ({self.timezone} days): train on sessions whose outcome was "
                f"known before {_day(self.dev_from)}, validation from {_day(self.dev_from)}"
                f"{test} (day boundaries closest to test {self.test_frac:.0%} and validation "
                f"{self.dev_frac:.0%} of the rest); {self.dropped_straddling} session(s) "
                "straddling a boundary dropped")


def known_at_of(full: Sequence[Session], target: Target | None = None) -> KnownAt:
    """When each session's label was known: the last event of its full session (``full``:
    the sessions before any prediction-point cut, by id), plus the look-ahead window of a
    ``comes_back`` target.

    Example:
        >>> from behavior_rag.synth import generate
        >>> s = generate(3, seed=1).sessions[0]
        >>> known_at_of([s])(s) == s.end
        True
    """
    ends = {s.session_id: s.end for s in full if s.events}
    wait = timedelta(days=target.rule.days) if target is not None and target.rule.days \
        else timedelta(0)
    return lambda s: (ends.get(s.session_id) or s.end) + wait


def _day(t: datetime | None) -> str:
    return "–" if t is None else t.strftime("%Y-%m-%d %H:%M") if t.time() != time() \
        else t.strftime("%Y-%m-%d")


def split_parts(sessions: Sequence[Session], by: str, *, seed: int = 0,
                dev_frac: float = 0.2, test_frac: float = 0.25,
                known_at: KnownAt | None = None) -> tuple[Split, SplitInfo]:
    """``sessions`` in train / dev / test parts, ``by`` user or time (module docstring);
    ``dev_frac`` is a share of what the test part leaves. ``known_at``: when a session's
    label was known (default: its last event), used by the time split only."""
    if by not in SPLITS:
        raise ConfigError(f"unknown split {by!r}; choose one of {list(SPLITS)}",
                          field="split", value=by)
    for name, frac in (("dev_frac", dev_frac), ("test_frac", test_frac)):
        if not 0 <= frac < 1:
            raise ConfigError(f"{name} must be >= 0 and < 1", field=name, value=frac)
    if by == "user":
        first = split_by_user(sessions, seed, dev_frac=0.0, test_frac=test_frac)
        rest = split_by_user(first.train, seed + 1, dev_frac=0.0, test_frac=dev_frac)
        parts, info = Split(rest.train, rest.test, first.test), SplitInfo(
            by="user", seed=seed, dev_frac=dev_frac, test_frac=test_frac)
    else:
        parts, info = split_by_time(sessions, dev_frac=dev_frac, test_frac=test_frac,
                                    known_at=known_at)
    info.sizes = {"train": len(parts.train), "dev": len(parts.dev), "test": len(parts.test)}
    return parts, info


def split_by_time(sessions: Sequence[Session], *, dev_frac: float = 0.2,
                  test_frac: float = 0.25, known_at: KnownAt | None = None
                  ) -> tuple[Split, SplitInfo]:
    """Earlier days train, later days test (see the module docstring); input order is kept
    within each part.

    Example:
        >>> from behavior_rag.synth import generate
        >>> parts, info = split_by_time(generate(300, seed=2).sessions)
        >>> all(s.start >= info.test_from for s in parts.test)
        True
    """
    undated = [s.session_id for s in sessions if not s.events]
    if undated:
        raise ConfigError(f"a time split needs timed events; {len(undated)} session(s) have "
                          "none (aggregate-only rows: use the user split)", field="split",
                          value="time", examples=undated[:5])
    known = known_at or (lambda s: s.end)
    zone = _zone(sessions)
    test_from = _boundary([s.start for s in sessions], test_frac, zone)
    pool = [s for s in sessions if s.start < test_from]
    earlier = [s for s in pool if known(s) < test_from]
    dev_from = _boundary([s.start for s in earlier], dev_frac, zone, before=test_from)
    train = [s for s in earlier if s.start < dev_from and known(s) < dev_from]
    dev = [s for s in earlier if s.start >= dev_from]
    test = [s for s in sessions if s.start >= test_from]
    info = SplitInfo(by="time", dev_frac=dev_frac, test_frac=test_frac, timezone=zone.key,
                     dev_from=dev_from, test_from=test_from,
                     dropped_straddling=len(pool) - len(train) - len(dev))
    return Split(train, dev, test), info


def _zone(sessions: Sequence[Session]) -> ZoneInfo:
    """The sessions' most common time zone (UTC when none is recorded)."""
    named = Counter(s.timezone for s in sessions if s.timezone)
    return ZoneInfo(named.most_common(1)[0][0] if named else "UTC")


def _boundary(starts: Sequence[datetime], frac: float, zone: ZoneInfo,
              before: datetime | None = None) -> datetime:
    """The local midnight after which close to ``frac`` of ``starts`` lie (at least one, and
    not all); without such a midnight, the start time of the ``frac`` quantile itself. With
    ``frac`` 0 (no part wanted): ``before``, or just after the last start."""
    ordered = sorted(starts)
    if not ordered:
        raise ConfigError("nothing to split by time: no session's outcome is known before the "
                          "test part begins (a look-ahead target needs a log longer than its "
                          "window)", field="split", value="time")
    end = before or ordered[-1] + timedelta(microseconds=1)
    want = round(frac * len(ordered))
    if want == 0:
        return end
    first = datetime.combine(ordered[0].astimezone(zone).date() + timedelta(days=1), time(),
                             zone)
    best: tuple[int, datetime] | None = None
    day = first
    while day <= ordered[-1]:
        after = len(ordered) - bisect_left(ordered, day)
        if 0 < after < len(ordered) and (best is None or abs(after - want) < best[0]):
            best = (abs(after - want), day)
        day = datetime.combine(day.date() + timedelta(days=1), time(), zone)
    if best is not None:
        return best[1]
    return ordered[max(len(ordered) - want, 1)]
