"""Server-side SVG geometry for the web view: event timelines and stacked bars over time.

Templates draw what these compute (no JavaScript, no chart library): positions are plain
numbers, colours come from two fixed palettes chosen for contrast with white text (WCAG AA,
>= 4.5:1, checked by the browser test).

Example:
    >>> from datetime import datetime, timezone
    >>> from behavior_rag.types import Event, Session
    >>> t = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> s = Session(session_id="s", user_id="u", events=[
    ...     Event(user_id="u", timestamp=t, type="view"),
    ...     Event(user_id="u", timestamp=t.replace(minute=2), type="purchase")])
    >>> tl = timeline(s, cited={1})
    >>> [(m.type, m.cited) for m in tl.marks], tl.ticks[-1].text
    ([('view', False), ('purchase', True)], '+2m')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from behavior_rag.types import EVENT_TYPES, Session

# Dark enough for white text on them (contrast >= 4.5:1 against #fff).
EVENT_COLOURS = {"view": "#3b5b8c", "search": "#6a3d9a", "cart": "#9a4d00",
                 "remove_from_cart": "#b00020", "fav": "#8e2a5e", "purchase": "#2e6b30"}
LABEL_PALETTE = ("#1f4e79", "#7b2d26", "#2e6b30", "#6a3d9a", "#7a4a00", "#005f5f", "#5b3a29",
                 "#7a1f5c", "#3d4a5c", "#4a5a12", "#8b1e3f", "#264653")
OTHER = "#555555"


class Mark(BaseModel):
    """One event drawn on a timeline."""

    index: int
    x: float
    y: float
    type: str
    colour: str
    title: str
    cited: bool = False
    against: bool = False


class Tick(BaseModel):
    x: float
    text: str


class Lane(BaseModel):
    y: float
    type: str
    colour: str


class Timeline(BaseModel):
    width: int
    height: int
    marks: list[Mark]
    ticks: list[Tick]
    lanes: list[Lane]


class Segment(BaseModel):
    key: str
    y: float
    height: float
    colour: str
    count: int


class Bar(BaseModel):
    x: float
    width: float
    label: str
    total: int
    segments: list[Segment]


class BarChart(BaseModel):
    width: int
    height: int
    bars: list[Bar]
    legend: list[tuple[str, str]]
    max_total: int


def label_colour(label: str | None, labels: Sequence[str]) -> str:
    """A label's colour: its position in the taxonomy picks it, so it is stable across pages."""
    if label is None or label not in labels:
        return OTHER
    return LABEL_PALETTE[list(labels).index(label) % len(LABEL_PALETTE)]


def span(seconds: float) -> str:
    """``'+1h 5m'``-style offset from the session start.

    >>> span(0), span(42), span(3900)
    ('+0s', '+42s', '+1h 5m')
    """
    s = int(round(seconds))
    if s < 60:
        return f"+{s}s"
    if s < 3600:
        return f"+{s // 60}m" + (f" {s % 60}s" if s % 60 else "")
    return f"+{s // 3600}h" + (f" {s % 3600 // 60}m" if s % 3600 // 60 else "")


def _xs(session: Session, left: float, right: float) -> list[float]:
    ev = session.events
    dur = session.duration_s
    if dur <= 0:  # all at one instant (or day resolution): spread by order
        step = (right - left) / max(len(ev) - 1, 1)
        return [left + i * step for i in range(len(ev))]
    return [left + (e.timestamp - session.start).total_seconds() / dur * (right - left)
            for e in ev]


def _title(i: int, session: Session) -> str:
    e = session.events[i]
    parts = [f"#{i} {e.type}", e.timestamp.strftime("%H:%M:%S")]
    parts += [f"{k} {v}" for k, v in (("item", e.item_id), ("category", e.category),
                                      ("price", e.price), ("query", e.query)) if v is not None]
    return ", ".join(parts)


def timeline(session: Session, *, cited: set[int] = frozenset(),
             against: set[int] = frozenset(), width: int = 720, lane_h: int = 24) -> Timeline:
    """Events on a time axis, one lane per event type present; cited / against flagged."""
    types = [t for t in EVENT_TYPES if any(e.type == t for e in session.events)]
    lanes = [Lane(y=14 + i * lane_h, type=t, colour=EVENT_COLOURS[t])
             for i, t in enumerate(types)]
    y = {ln.type: ln.y for ln in lanes}
    xs = _xs(session, 120, width - 16)
    marks = [Mark(index=i, x=round(x, 1), y=y[e.type], type=e.type,
                  colour=EVENT_COLOURS[e.type], title=_title(i, session),
                  cited=i in cited, against=i in against)
             for i, (e, x) in enumerate(zip(session.events, xs))]
    dur = session.duration_s
    ticks = [Tick(x=120 + f * (width - 136), text=span(f * dur)) for f in (0, 0.5, 1)] \
        if session.events else []
    return Timeline(width=width, height=14 + len(lanes) * lane_h + 12, marks=marks,
                    ticks=ticks, lanes=lanes)


def mini_timeline(session: Session, width: int = 180, height: int = 18) -> Timeline:
    """A one-row strip of coloured ticks, for result lists."""
    xs = _xs(session, 4, width - 4)
    marks = [Mark(index=i, x=round(x, 1), y=height / 2, type=e.type,
                  colour=EVENT_COLOURS[e.type], title=_title(i, session))
             for i, (e, x) in enumerate(zip(session.events, xs))]
    return Timeline(width=width, height=height, marks=marks, ticks=[], lanes=[])


def bucket_key(start: datetime, weekly: bool) -> str:
    if weekly:
        iso = start.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return start.strftime("%Y-%m-%d")


def stacked_bars(rows: Sequence[tuple[datetime, str]], colours: dict[str, str], *,
                 width: int = 720, height: int = 180, max_bars: int = 60) -> BarChart:
    """Counts of ``(start, key)`` rows per day (per ISO week when the days outnumber
    ``max_bars``), stacked by key in ``colours`` order."""
    days = {bucket_key(t, False) for t, _ in rows}
    weekly = len(days) > max_bars
    counts: dict[str, Counter] = {}
    for t, key in rows:
        counts.setdefault(bucket_key(t, weekly), Counter())[key] += 1
    buckets = sorted(counts)[-max_bars:]
    top = max((sum(counts[b].values()) for b in buckets), default=0)
    plot_h, slot = height - 24, (width - 40) / max(len(buckets), 1)
    bars = []
    for i, b in enumerate(buckets):
        y, segs = float(plot_h), []
        for key, colour in colours.items():
            n = counts[b].get(key, 0)
            if n:
                h = n / top * (plot_h - 8)
                y -= h
                segs.append(Segment(key=key, y=round(y, 1), height=round(h, 1), colour=colour,
                                    count=n))
        bars.append(Bar(x=round(36 + i * slot, 1), width=round(max(slot * 0.8, 1), 1),
                        label=b, total=sum(counts[b].values()), segments=segs))
    used = {k for b in buckets for k in counts[b]}
    return BarChart(width=width, height=height, bars=bars, max_total=top,
                    legend=[(k, c) for k, c in colours.items() if k in used])
