"""Compute :class:`SessionFacts` from a session: numbers by code, each citing its event indices.

Explanations may only state facts found here, and evidence is checked against these
values and indices — so every fact records exactly which events it rests on.

Example:
    >>> from behavior_rag.synth import generate
    >>> s = generate(5, seed=3).sessions[0]
    >>> f = compute_facts(s)
    >>> f.n_events.value == s.n_events
    True
    >>> day = s.model_copy(update={"time_resolution": "day"})
    >>> compute_facts(day).part_of_day.value, compute_facts(day).unknown["part_of_day"]
    (None, 'the source records dates only (day resolution)')
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from zoneinfo import ZoneInfo

from behavior_rag.types import EVENT_TYPES, Fact, RepeatView, Session, SessionFacts

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# The parametrised fact types, looked up once: pydantic resolves ``Fact[...]`` on every
# subscription, which cost as much as building the facts themselves (profile in
# eval/reports/bench_heads.md). Public: the running facts of live sessions
# (behavior_rag.running_facts) build the same facts from the same types
F_INT = Fact[int]
F_FLOAT_OR_NONE = Fact[float | None]
F_FLOAT = Fact[float]
F_STRS = Fact[list[str]]
F_FLOATS = Fact[list[float]]
F_BOOL = Fact[bool]
F_INT_OR_NONE = Fact[int | None]
F_STR_OR_NONE = Fact[str | None]
# Facts that most sessions share (nothing of a kind, no price): frozen, so one instance each
ZERO = F_INT(value=0, events=[])
NO_FLOAT = F_FLOAT_OR_NONE(value=None)


def count_fact(idx: list[int], value: int | None = None) -> Fact[int]:
    """``value`` (default: how many) resting on events ``idx``; the shared zero for none."""
    if not idx:
        return ZERO
    return F_INT(value=len(idx) if value is None else value, events=idx)


def part_of_day(hour: int) -> str:
    """night 0-5, morning 6-11, afternoon 12-17, evening 18-23."""
    return ("night", "morning", "afternoon", "evening")[hour // 6]


def compute_facts(session: Session, tz: str = "UTC",
                  history: dict[str, Fact] | None = None) -> SessionFacts:
    """All facts of ``session``; time-of-day facts in the session's own zone (its source's),
    else ``tz``; ``history``: its cross-session facts (:mod:`behavior_rag.history`)."""
    zone = ZoneInfo(session.timezone or tz)
    ev = session.events
    idx_by_type: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(ev):
        idx_by_type[e.type].append(i)
    counts = {f"n_{t}": count_fact(idx_by_type[t]) for t in EVENT_TYPES}
    all_idx = list(range(len(ev)))

    dwell = [(b.timestamp - a.timestamp).total_seconds() for a, b in zip(ev, ev[1:])]
    if dwell:
        longest = max(range(len(dwell)), key=lambda i: dwell[i])
        dwell_max = F_FLOAT_OR_NONE(value=dwell[longest], events=[longest, longest + 1])
        dwell_median = F_FLOAT_OR_NONE(value=float(statistics.median(dwell)), events=all_idx)
    else:
        dwell_max = dwell_median = NO_FLOAT

    def distinct(attr: str) -> Fact[int]:
        idx = [i for i, e in enumerate(ev) if getattr(e, attr) is not None]
        return count_fact(idx, len({getattr(ev[i], attr) for i in idx}))

    priced = [i for i, e in enumerate(ev) if e.price is not None]
    if priced:
        prices = [ev[i].price for i in priced]
        lo, hi, med = min(prices), max(prices), float(statistics.median(prices))
        price_min = F_FLOAT_OR_NONE(value=lo, events=[i for i in priced if ev[i].price == lo])
        price_max = F_FLOAT_OR_NONE(value=hi, events=[i for i in priced if ev[i].price == hi])
        price_median = F_FLOAT_OR_NONE(value=med, events=priced)
    else:
        price_min = price_max = price_median = NO_FLOAT

    searches = idx_by_type["search"]
    queries = F_STRS(value=[ev[i].query for i in searches if ev[i].query],
                    events=[i for i in searches if ev[i].query])

    carts = [i for i in idx_by_type["cart"] if ev[i].item_id is not None]
    buys = [i for i in idx_by_type["purchase"] if ev[i].item_id is not None]
    carted = {ev[i].item_id for i in carts}
    bought = {ev[i].item_id for i in buys}
    not_bought = [i for i in carts if ev[i].item_id not in bought]
    if not idx_by_type["cart"]:
        abandoned = False
    elif carted:
        abandoned = not (carted & bought)
    else:  # carts without item ids: any purchase counts as converting
        abandoned = not idx_by_type["purchase"]
    cart_abandoned = F_BOOL(value=abandoned,
                           events=idx_by_type["cart"] if abandoned else
                           sorted(idx_by_type["cart"] + idx_by_type["purchase"]))

    views: dict[str, list[int]] = defaultdict(list)
    for i in idx_by_type["view"]:
        if ev[i].item_id is not None:
            views[ev[i].item_id].append(i)
    repeat = sorted((RepeatView(item_id=k, count=len(v), events=v) for k, v in views.items()
                     if len(v) > 1), key=lambda r: (-r.count, r.events[0]))
    top = repeat[0] if repeat else None
    max_views = F_INT(value=top.count if top else (1 if views else 0),
                     events=top.events if top else
                     ([next(iter(views.values()))[0]] if views else []))

    if ev:
        local = ev[0].timestamp.astimezone(zone)
        start_hour = F_INT_OR_NONE(value=local.hour, events=[0])
        pod = F_STR_OR_NONE(value=part_of_day(local.hour), events=[0])
        weekday = F_STR_OR_NONE(value=WEEKDAYS[local.weekday()], events=[0])
    else:
        start_hour = F_INT_OR_NONE(value=None)
        pod = weekday = F_STR_OR_NONE(value=None)

    aggregates = {k: Fact(value=v) for k, v in session.aggregates.items()}
    facts = SessionFacts(
        n_events=F_INT(value=len(ev), events=all_idx),
        **counts,
        duration_s=F_FLOAT(value=session.duration_s, events=[0, len(ev) - 1] if ev else []),
        dwell_s=F_FLOATS(value=dwell, events=all_idx),
        dwell_median_s=dwell_median,
        dwell_max_s=dwell_max,
        distinct_items=distinct("item_id"),
        distinct_categories=distinct("category"),
        distinct_brands=distinct("brand"),
        price_min=price_min, price_median=price_median, price_max=price_max,
        queries=queries,
        carted_items=count_fact(carts, len(carted)),
        purchased_items=count_fact(buys, len(bought)),
        carted_not_purchased=count_fact(not_bought, len({ev[i].item_id for i in not_bought})),
        cart_abandoned=cart_abandoned,
        max_views_one_item=max_views,
        repeat_viewed_items=count_fact(sorted(i for r in repeat for i in r.events), len(repeat)),
        repeat_views=repeat,
        start_hour=start_hour, part_of_day=pod, weekday=weekday,
        aggregates=aggregates, **({} if history is None else {"history": history}),
    )
    return _dates_only(facts, session, zone) if session.time_resolution == "day" else facts


DAY_ONLY = "the source records dates only (day resolution)"


def _dates_only(f: SessionFacts, session: Session, zone: ZoneInfo) -> SessionFacts:
    """Facts of a day-resolution session: no time of day, no dwell times (they would be
    invented from midnight timestamps); the weekday is the recorded date's."""
    none_int, none_str = F_INT_OR_NONE(value=None), F_STR_OR_NONE(value=None)
    none_float = F_FLOAT_OR_NONE(value=None)
    weekday = F_STR_OR_NONE(value=WEEKDAYS[session.events[0].timestamp.astimezone(zone).weekday()],
                           events=[0]) if session.events else none_str
    gone = ("start_hour", "part_of_day", "dwell_s", "dwell_median_s", "dwell_max_s")
    return f.model_copy(update={
        "start_hour": none_int, "part_of_day": none_str, "weekday": weekday,
        "dwell_s": F_FLOATS(value=[]), "dwell_median_s": none_float,
        "dwell_max_s": none_float, "unknown": f.unknown | dict.fromkeys(gone, DAY_ONLY)})
