"""The facts of a session kept up to date as its events arrive (live sessions).

:func:`~behavior_rag.facts.compute_facts` reads a whole session; a live session gains one event
per request, and re-reading all of it per append made a prediction cost O(session)
(eval/reports/bench_live.md). :class:`RunningFacts` keeps running aggregates instead — counts,
index lists per event type, sets of items, sorted dwell times and prices for the medians, the
longest dwell, the repeat-viewed items — so :meth:`RunningFacts.add` costs O(1) per event
(the sorted lists take one ``insort``, a memmove), and :meth:`RunningFacts.snapshot` builds
the same :class:`~behavior_rag.types.SessionFacts` as ``compute_facts`` without a pass over
the events (it copies the index lists facts cite). Events are guarded like the featurizer
guards a session (:func:`~behavior_rag.guard.guard_event`), each once, when added.

What it covers is what a live session is: events only (no source aggregates, no day-only
time resolution, no source time zone). Equality with the batch path is tested on synthetic
and adversarial sessions (tests/test_live_incremental.py).

Example:
    >>> from behavior_rag.facts import compute_facts
    >>> from behavior_rag.synth import generate
    >>> s = generate(1, seed=4).sessions[0]
    >>> run = RunningFacts(s.session_id, s.user_id, guard=False)
    >>> for e in s.events:
    ...     run.add(e)
    >>> run.snapshot().facts == compute_facts(s)
    True
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from behavior_rag.facts import (
    F_BOOL,
    F_FLOAT,
    F_FLOAT_OR_NONE,
    F_FLOATS,
    F_INT,
    F_INT_OR_NONE,
    F_STR_OR_NONE,
    F_STRS,
    NO_FLOAT,
    WEEKDAYS,
    ZERO,
    part_of_day,
)
from behavior_rag.guard import guard_event
from behavior_rag.types import EVENT_TYPES, Event, Fact, RepeatView, Session, SessionFacts


class Snapshot(BaseModel):
    """A running session at one moment: its (guarded) events, their facts (no history facts:
    the featurizer adds them) and how many instruction-like spans the guard cut."""

    session: Session
    facts: SessionFacts
    cuts: int = 0


class RunningFacts:
    """Running aggregates of one session's events, in time order (see the module doc).

    ``tz``: the zone of time-of-day facts; ``guard``: cut instruction-like free text from each
    event first (``classify.strip_instructions``)."""

    __slots__ = ("session_id", "user_id", "tz", "guard", "events", "cuts", "_by_type",
                 "_dwell", "_dwell_sorted", "_longest", "_distinct", "_priced", "_prices",
                 "_lo", "_hi", "_queries", "_carts", "_buys", "_views", "_first_view",
                 "_repeat_idx", "_repeats", "_start", "_snap")

    def __init__(self, session_id: str, user_id: str, *, tz: str = "UTC",
                 guard: bool = True) -> None:
        self.session_id, self.user_id, self.tz, self.guard = session_id, user_id, tz, guard
        self.events: list[Event] = []
        self.cuts = 0
        self._by_type: dict[str, list[int]] = {t: [] for t in EVENT_TYPES}
        self._dwell: list[float] = []
        self._dwell_sorted: list[float] = []
        self._longest = -1  # index into _dwell of the first longest dwell
        # per attribute: (events with it, its distinct values)
        self._distinct = {a: ([], set()) for a in ("item_id", "category", "brand")}
        self._priced: list[int] = []
        self._prices: list[float] = []  # sorted, for the median
        self._lo: tuple[float, list[int]] | None = None  # lowest price and where
        self._hi: tuple[float, list[int]] | None = None
        self._queries: tuple[list[str], list[int]] = ([], [])
        self._carts: list[int] = []  # carts / purchases with an item id
        self._buys: list[int] = []
        self._views: dict[str, list[int]] = {}  # item -> its view events, first view order
        self._first_view: int | None = None
        self._repeat_idx: list[int] = []  # sorted view events of items viewed twice or more
        self._repeats: dict[str, RepeatView] = {}  # kept until the item is viewed again
        self._start: tuple[Fact, Fact, Fact] | None = None  # start hour, part of day, weekday
        self._snap: Snapshot | None = None  # the last snapshot, until an event is added

    def __len__(self) -> int:
        return len(self.events)

    def add(self, event: Event) -> None:
        """Add the session's next event (not older than the last one)."""
        if self.guard:
            event, n = guard_event(event)
            self.cuts += n
        i = len(self.events)
        if self.events:
            self._add_dwell((event.timestamp - self.events[-1].timestamp).total_seconds())
        else:
            self._start = self._start_facts(event)
        self.events.append(event)
        self._snap = None
        self._by_type[event.type].append(i)
        for attr, (idx, values) in self._distinct.items():
            v = getattr(event, attr)
            if v is not None:
                idx.append(i)
                values.add(v)
        if event.price is not None:
            self._add_price(i, event.price)
        if event.type == "search" and event.query:
            self._queries[0].append(event.query)
            self._queries[1].append(i)
        if event.item_id is not None:
            self._add_item(i, event)

    def _add_dwell(self, d: float) -> None:
        self._dwell.append(d)
        insort(self._dwell_sorted, d)
        if self._longest < 0 or d > self._dwell[self._longest]:  # max() keeps the first
            self._longest = len(self._dwell) - 1

    def _add_price(self, i: int, p: float) -> None:
        self._priced.append(i)
        insort(self._prices, p)
        self._lo = _extreme(self._lo, i, p, lower=True)
        self._hi = _extreme(self._hi, i, p, lower=False)

    def _add_item(self, i: int, e: Event) -> None:
        if e.type == "cart":
            self._carts.append(i)
        elif e.type == "purchase":
            self._buys.append(i)
        elif e.type == "view":
            seen = self._views.setdefault(e.item_id, [])
            seen.append(i)
            if self._first_view is None:
                self._first_view = i
            if len(seen) == 2:  # a repeat now: its first view joins the sorted list
                insort(self._repeat_idx, seen[0])
            if len(seen) >= 2:
                self._repeat_idx.append(i)  # the newest event: always last
                self._repeats.pop(e.item_id, None)

    def _start_facts(self, first: Event) -> tuple[Fact, Fact, Fact]:
        local = first.timestamp.astimezone(ZoneInfo(self.tz))
        return (F_INT_OR_NONE(value=local.hour, events=[0]),
                F_STR_OR_NONE(value=part_of_day(local.hour), events=[0]),
                F_STR_OR_NONE(value=WEEKDAYS[local.weekday()], events=[0]))

    # ---- the snapshot -----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The session so far and its facts, equal to ``compute_facts`` of it (kept until the
        next :meth:`add`)."""
        if self._snap is None:
            session = Session.model_construct(session_id=self.session_id, user_id=self.user_id,
                                              events=list(self.events), aggregates={})
            self._snap = Snapshot.model_construct(session=session, facts=self._facts(),
                                                  cuts=self.cuts)
        return self._snap

    def _facts(self) -> SessionFacts:
        n, by = len(self.events), self._by_type
        all_idx = list(range(n))
        return SessionFacts(
            n_events=_fact(F_INT, n, events=all_idx),
            **{f"n_{t}": _count(by[t]) for t in EVENT_TYPES},
            duration_s=_fact(F_FLOAT, (self.events[-1].timestamp - self.events[0].timestamp)
                               .total_seconds() if n else 0.0,
                               events=[0, n - 1] if n else []),
            dwell_s=_fact(F_FLOATS, list(self._dwell), events=all_idx),
            **self._dwell_facts(all_idx),
            **{f"distinct_{a}": _count(idx, len(values)) for a, (idx, values) in
               zip(("items", "categories", "brands"), self._distinct.values())},
            **self._price_facts(),
            queries=_fact(F_STRS, list(self._queries[0]), events=self._queries[1]),
            **self._cart_facts(),
            **self._view_facts(),
            **dict(zip(("start_hour", "part_of_day", "weekday"), self._start or (
                _fact(F_INT_OR_NONE, None), _fact(F_STR_OR_NONE, None),
                _fact(F_STR_OR_NONE, None)))))

    def _dwell_facts(self, all_idx: list[int]) -> dict[str, Fact]:
        if not self._dwell:
            return {"dwell_median_s": NO_FLOAT, "dwell_max_s": NO_FLOAT}
        k = self._longest
        return {"dwell_median_s": _fact(F_FLOAT_OR_NONE, float(_median(self._dwell_sorted)),
                                                  events=all_idx),
                "dwell_max_s": _fact(F_FLOAT_OR_NONE, self._dwell[k], events=[k, k + 1])}

    def _price_facts(self) -> dict[str, Fact]:
        if self._lo is None or self._hi is None:
            return dict.fromkeys(("price_min", "price_median", "price_max"), NO_FLOAT)
        return {"price_min": _fact(F_FLOAT_OR_NONE, self._lo[0], events=self._lo[1]),
                "price_median": _fact(F_FLOAT_OR_NONE, float(_median(self._prices)),
                                                events=self._priced),
                "price_max": _fact(F_FLOAT_OR_NONE, self._hi[0], events=self._hi[1])}

    def _cart_facts(self) -> dict[str, Fact]:
        # a purchase can turn every earlier cart of its item into a bought one: these few
        # lists are recomputed from the cart and purchase events alone
        ev, carts, buys = self.events, self._carts, self._buys
        any_carts, any_buys = self._by_type["cart"], self._by_type["purchase"]
        carted = {ev[i].item_id for i in carts}
        bought = {ev[i].item_id for i in buys}
        not_bought = [i for i in carts if ev[i].item_id not in bought]
        if not any_carts:
            abandoned = False
        elif carted:
            abandoned = not (carted & bought)
        else:  # carts without item ids: any purchase counts as converting
            abandoned = not any_buys
        return {"carted_items": _count(carts, len(carted)),
                "purchased_items": _count(buys, len(bought)),
                "carted_not_purchased": _count(not_bought,
                                                   len({ev[i].item_id for i in not_bought})),
                "cart_abandoned": _fact(F_BOOL, abandoned, events=any_carts if abandoned else
                                         sorted(any_carts + any_buys))}

    def _view_facts(self) -> dict:
        repeat = sorted((self._repeat_view(item) for item, v in self._views.items()
                         if len(v) > 1), key=lambda r: (-r.count, r.events[0]))
        top = repeat[0] if repeat else None
        max_views = _fact(F_INT, top.count if top else (1 if self._views else 0),
                          events=top.events if top else
                          ([self._first_view] if self._first_view is not None else []))
        return {"max_views_one_item": max_views,
                "repeat_viewed_items": _count(self._repeat_idx, len(repeat)),
                "repeat_views": repeat}

    def _repeat_view(self, item: str) -> RepeatView:
        r = self._repeats.get(item)
        if r is None:  # built once per new view of the item, not per snapshot
            v = self._views[item]
            r = self._repeats[item] = RepeatView(item_id=item, count=len(v), events=v)
        return r


def _fact(kind: type[Fact], value, events: Sequence[int] = ()) -> Fact:
    """``kind(value=value, events=events)`` without validating again what is valid by
    construction (its lists are copies: the running ones go on growing). Validating the
    index lists cost O(session) per snapshot."""
    # every field given: pydantic inspects a default factory's signature per construct
    return kind.model_construct(value=value, events=list(events), cites=[])


def _count(idx: list[int], value: int | None = None) -> Fact[int]:
    """:func:`~behavior_rag.facts.count_fact` for running index lists."""
    return ZERO if not idx else _fact(F_INT, len(idx) if value is None else value, idx)


def _extreme(cur: tuple[float, list[int]] | None, i: int, p: float, *, lower: bool
             ) -> tuple[float, list[int]]:
    """The lowest (highest) price so far and its events, after event ``i`` priced ``p``."""
    if cur is None or (p < cur[0] if lower else p > cur[0]):
        return p, [i]
    if p == cur[0]:
        cur[1].append(i)
    return cur


def _median(ordered: list[float]) -> float:
    """``statistics.median`` of an already sorted list (the same arithmetic)."""
    n = len(ordered)
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2
