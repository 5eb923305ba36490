"""Render a :class:`Session` as compact, deterministic text for embedding and prompts.

Layout: one facts line, then one line per event (or run of repeated views of one item) with the
time since the session began. Sources that record dates only (day resolution) have no durations
or offsets to show: the facts line says the times were not recorded and events carry their day
offset (``+0d``), never an invented ``+0:00``. Free text from the data (queries, brand/category names that are
not plain identifiers) is JSON-quoted, so it reads as data and cannot break the layout or pose
as an instruction. Sessions over the token budget keep the facts line, the first and the last
events, and say what was elided in between.

Example:
    >>> from behavior_rag.synth import generate
    >>> text = render(generate(3, seed=0).sessions[0], max_tokens=64)
    >>> text.startswith("facts:")
    True
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import time
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from behavior_rag.facts import compute_facts
from behavior_rag.settings import Settings, default_settings
from behavior_rag.tokens import TokenCounter
from behavior_rag.types import Event, Session, SessionFacts

_SAFE = re.compile(r"^[A-Za-z0-9_.:/\-]{1,40}$")


class RenderedLine(BaseModel):
    """One line of a rendering and the event indices it shows."""

    text: str
    events: list[int]


def json_text(value: str) -> str:
    """A JSON string literal that also escapes ``<`` and ``>``, so data can never close or open
    the ``<session>`` tags prompts wrap it in."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


def quote(value: str, cap: int = 40) -> str:
    """Identifiers stay bare; anything else becomes a JSON string, capped at ``cap`` chars.

    The caps keep free text (names, queries) from crowding the behaviour out of the token
    budget — and out of the embedding — however long a seller or shopper makes it.
    """
    if _SAFE.match(value):
        return value
    return json_text(value if len(value) <= cap else value[: cap - 1] + "…")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"+{h}:{m:02d}:{sec:02d}" if h else f"+{m}:{sec:02d}"


def _span(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def dates_only(session: Session) -> bool:
    """Whether ``session``'s times are dates only: recorded so at ingest, or (a store from before
    that was recorded) two or more events that are all at midnight, UTC or the session's zone.

    >>> from datetime import datetime, timezone
    >>> e = Event(user_id="u", timestamp=datetime(2024, 3, 2, tzinfo=timezone.utc), type="view")
    >>> dates_only(Session(session_id="s", user_id="u", events=[e, e]))
    True
    """
    if session.time_resolution is not None:
        return session.time_resolution == "day"
    ev = session.events
    if len(ev) < 2:
        return False
    zones = [ZoneInfo("UTC")] + ([ZoneInfo(session.timezone)] if session.timezone else [])
    return any(all(e.timestamp.astimezone(z).time() == time(0) for e in ev) for z in zones)


def _as_dated(session: Session) -> Session:
    """``session`` marked day-resolution when its times are dates only (facts then leave out
    time of day and dwell times instead of reading them off midnight)."""
    if session.time_resolution is None and dates_only(session):
        return session.model_copy(update={"time_resolution": "day"})
    return session


def _offset(session: Session, i: int, tz: str = "UTC") -> str:
    """Event ``i``'s time since the session began: ``+m:ss``, or ``+Nd`` (days) for a
    day-resolution session, whose times of day are unknown."""
    ev = session.events
    if dates_only(session):
        zone = ZoneInfo(session.timezone or tz)
        days = (ev[i].timestamp.astimezone(zone).date() - ev[0].timestamp.astimezone(zone).date())
        return f"+{days.days}d"
    return _clock((ev[i].timestamp - ev[0].timestamp).total_seconds())


def _day_span(session: Session, n: int, tz: str) -> str:
    zone = ZoneInfo(session.timezone or tz)
    days = sorted({e.timestamp.astimezone(zone).date() for e in session.events})
    if len(days) == 1:
        return f"{n} events on {days[0]:%a %Y-%m-%d} (time of day unknown)"
    return (f"{n} events over {(days[-1] - days[0]).days + 1} days, {days[0]:%a %Y-%m-%d} to "
            f"{days[-1]:%a %Y-%m-%d} (time of day unknown)")


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def facts_clauses(session: Session, facts: SessionFacts, tz: str = "UTC") -> list[str]:
    """The header's clauses, most important first (a tight budget drops them from the end)."""
    if not session.events:
        parts = []
        for k, v in session.aggregates.items():
            if isinstance(v, bool):
                v = "yes" if v else "no"
            parts.append(f"{k} {_num(v) if isinstance(v, float) else quote(str(v))}")
        return ["aggregate session", ", ".join(parts)]
    f = facts
    counts = ", ".join(f"{t} {getattr(f, 'n_' + t).value}" for t in
                       ("view", "search", "cart", "remove_from_cart", "fav", "purchase")
                       if getattr(f, "n_" + t).value)
    zone = session.timezone or tz  # the source's zone: the same clock the facts were computed on
    start = session.start.astimezone(ZoneInfo(zone))
    when = [f"{f.n_events.value} events over {_span(f.duration_s.value)}",
            f"{start:%a %Y-%m-%d %H:%M} {zone} ({f.part_of_day.value})" if f.part_of_day.value
            else f"{start:%a %Y-%m-%d} (time of day unknown)"]
    if dates_only(session):  # no duration to state: the dates and what is unknown
        when = [_day_span(session, f.n_events.value, tz)]
    clauses = [
        *when,
        counts,
        f"items {f.distinct_items.value}, categories {f.distinct_categories.value}"
        + (f", brands {f.distinct_brands.value}" if f.distinct_brands.value else ""),
    ]
    if f.price_min.value is not None:
        clauses.append(f"price {_num(f.price_min.value)}-{_num(f.price_max.value)} "
                       f"(median {_num(f.price_median.value)})")
    if f.n_cart.value or f.n_purchase.value:
        clauses.append(f"carted {f.carted_items.value}, bought {f.purchased_items.value}, "
                       f"cart abandoned {'yes' if f.cart_abandoned.value else 'no'}")
    if f.max_views_one_item.value > 1:
        clauses.append(f"max views of one item {f.max_views_one_item.value}")
    return [c for c in clauses if c]


def _event_text(e: Event) -> str:
    if e.type == "search":
        q = e.query or ""
        return f"search {json_text(q if len(q) <= 80 else q[:79] + '…')}"
    bits = [e.type]
    if e.item_id is not None:
        bits.append(f"item {quote(e.item_id)}")
    if e.category is not None:
        bits.append(f"cat {quote(e.category)}")
    if e.brand is not None:
        bits.append(f"brand {quote(e.brand)}")
    if e.price is not None:
        bits.append(f"${_num(e.price)}")
    if e.query:
        bits.append(f"query {quote(e.query, 80)}")
    return " ".join(bits)


def event_lines(session: Session, tz: str = "UTC") -> list[RenderedLine]:
    """Event lines with relative times (days for a day-resolution session); consecutive views of
    the same item merge into one."""
    ev = session.events
    out: list[RenderedLine] = []
    i = 0
    while i < len(ev):
        j = i + 1
        if ev[i].type == "view" and ev[i].item_id is not None:
            while j < len(ev) and ev[j].type == "view" and ev[j].item_id == ev[i].item_id:
                j += 1
        text = f"{_offset(session, i, tz)} {_event_text(ev[i])}"
        if j - i > 1:
            text += f" x{j - i}"
        out.append(RenderedLine(text=text, events=list(range(i, j))))
        i = j
    return out


def _elision(session: Session, hidden: list[RenderedLine], tz: str = "UTC") -> str:
    idx = [i for line in hidden for i in line.events]
    ev = session.events
    kinds = Counter(ev[i].type for i in idx)
    span = f"{_offset(session, idx[0], tz)} to {_offset(session, idx[-1], tz)}"
    what = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"... {len(idx)} events elided ({span}: {what}) ..."


def render_lines(session: Session, *, max_tokens: int | None = None,
                 settings: Settings | None = None,
                 facts: SessionFacts | None = None) -> list[RenderedLine]:
    """The rendering as lines (facts line first, events=[]), within ``max_tokens``."""
    settings = settings or default_settings()
    budget = max_tokens or settings.render.max_tokens
    tz = settings.render.timezone
    session = _as_dated(session)
    facts = facts or compute_facts(session, tz=tz)
    clauses = facts_clauses(session, facts, tz)
    header = RenderedLine(text="facts: " + "; ".join(clauses), events=[])
    body = event_lines(session, tz)
    counter = TokenCounter.for_model(settings.embed.model)
    sizes = counter.count_parts([header.text, *(b.text for b in body)])
    if counter.special + sum(sizes) <= budget:
        return [header, *body]
    # Budgets too small for the whole facts line drop its least important clauses first.
    while len(clauses) > 1 and counter.special + sizes[0] + 24 > budget:
        clauses.pop()
        header = RenderedLine(text="facts: " + "; ".join(clauses), events=[])
        sizes[0] = counter.count_parts([header.text])[0]

    def pick(n: int) -> list[RenderedLine]:
        head, tail = (n + 1) // 2, n // 2
        hidden = body[head: len(body) - tail]
        elided = RenderedLine(text=_elision(session, hidden, tz), events=[])
        return [header, *body[:head], elided, *(body[len(body) - tail:] if tail else [])]

    def cost(n: int) -> int:
        head, tail = (n + 1) // 2, n // 2
        kept = sizes[0] + sum(sizes[1: 1 + head]) + sum(sizes[len(sizes) - tail:] if tail else [])
        return counter.special + kept + 24  # 24 ~ the elision line's tokens
    lo, hi = 0, len(body) - 1
    while lo < hi:  # largest n whose estimated cost fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid - 1)
    n = lo
    lines = pick(n)
    # The estimate can be off by a few tokens at line joins: verify and shrink if needed.
    while n > 0 and counter.count("\n".join(x.text for x in lines)) > budget:
        n -= 1
        lines = pick(n)
    return lines


def render(session: Session, *, max_tokens: int | None = None,
           settings: Settings | None = None, facts: SessionFacts | None = None) -> str:
    """``Session`` -> text (see module docs). Same session, same settings -> same text."""
    return "\n".join(x.text for x in render_lines(session, max_tokens=max_tokens,
                                                    settings=settings, facts=facts))
