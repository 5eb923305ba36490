"""What each page of the web view shows, built from the service's own calls (the same
``BehaviorRAG`` answers the JSON API gives) into models the templates draw.

Every builder runs in a model-slot worker thread (never on the event loop) and reads under the
service's read lock, as the JSON routes do.

Example:
    >>> view = session_view(state, "s_42")        # doctest: +SKIP
    >>> sorted(r.index for r in view.events if r.cited) == sorted(view.cited)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import random
import threading
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from behavior_rag.discover import Cluster, discover
from behavior_rag.errors import BehaviorRagError, ConfigError
from behavior_rag.index.base import Filter
from behavior_rag.profile import UserProfile
from behavior_rag.retrieve import Neighbor
from behavior_rag.service.state import ServiceState
from behavior_rag.service.ui.charts import (
    LABEL_PALETTE,
    BarChart,
    Timeline,
    label_colour,
    mini_timeline,
    span,
    stacked_bars,
    timeline,
)
from behavior_rag.taxonomy import Label
from behavior_rag.types import Evidence, PatternPrediction, Session
from behavior_rag.wire.errors import NotFoundError
from behavior_rag.wire.schemas import SimilarRequest

# Discovery re-clusters a seeded sample (embeddings come from the content-hash cache): enough
# for the patterns to be stable, small enough for the first overview to take seconds.
DISCOVER_SAMPLE = 800


class LabelRow(Label):
    """A taxonomy label as the overview shows it: its colour and labelled sessions."""

    colour: str
    count: int


class PatternRow(Cluster):
    """A discovered pattern with the colour the charts give it."""

    colour: str


class Overview(BaseModel):
    sessions: int
    users: int
    labelled: int
    labels: list[LabelRow]
    label_chart: BarChart | None
    patterns: list[PatternRow]
    pattern_chart: BarChart | None
    discovery_note: str


class EventRow(BaseModel):
    index: int
    type: str
    time: str
    offset: str
    item: str | None
    category: str | None
    brand: str | None
    price: float | None
    query: str | None
    cited_by: list[str] = Field(default_factory=list)
    against_by: list[str] = Field(default_factory=list)

    @property
    def cited(self) -> bool:
        return bool(self.cited_by)


class ProbRow(BaseModel):
    label: str
    p: float
    colour: str


class SessionView(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    session: Session
    stored_label: str | None
    events: list[EventRow]
    timeline: Timeline
    prediction: PatternPrediction
    colour: str
    probabilities: list[ProbRow]
    cited: list[int]
    against: list[int]
    labels: list[str]


class SimilarRow(BaseModel):
    neighbor: Neighbor
    mini: Timeline | None
    colour: str


class SimilarView(BaseModel):
    query: dict[str, Any]
    results: list[SimilarRow]
    labels: list[str]
    error: str | None = None


class FactRow(BaseModel):
    name: str
    value: str
    sessions: list[str]


class ProfileView(BaseModel):
    profile: UserProfile
    facts: list[FactRow]
    starts: dict[str, str]


def _labels(state: ServiceState) -> list[str]:
    return list(state.taxonomy.names) if state.taxonomy else []


def _session(state: ServiceState, session_id: str) -> Session:
    with state.lock.read():
        s = state.rag.sessions.get(session_id)
    if s is None:
        raise NotFoundError("session is not in the index", field="session_id",
                            value=session_id)
    return s


def _cites(items: list[Evidence], n: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in items:
        for i in e.events:
            if 0 <= i < n:
                out.setdefault(i, []).append(e.fact or e.text or "evidence")
    return out


def session_view(state: ServiceState, session_id: str) -> SessionView:
    """A session's events, its prediction, and the events its evidence cites."""
    s = _session(state, session_id)
    p = state.classify([s], voters=True)[0]  # the page links the similar sessions
    n, labels = s.n_events, _labels(state)
    pro, con = _cites(p.evidence, n), _cites(p.against, n)
    rows = [EventRow(index=i, type=e.type, time=e.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
                     offset=span((e.timestamp - s.start).total_seconds()), item=e.item_id,
                     category=e.category, brand=e.brand, price=e.price, query=e.query,
                     cited_by=pro.get(i, []), against_by=con.get(i, []))
            for i, e in enumerate(s.events)]
    probs = sorted(p.probabilities.items(), key=lambda kv: -kv[1])
    return SessionView(session=s, stored_label=s.label, events=rows,
                       timeline=timeline(s, cited=set(pro), against=set(con)),
                       prediction=p, colour=label_colour(p.label, labels), labels=labels,
                       probabilities=[ProbRow(label=k, p=v, colour=label_colour(k, labels))
                                      for k, v in probs],
                       cited=sorted(pro), against=sorted(con))


def _date(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError("not a date (use YYYY-MM-DD)", field=field, value=value) from None


def similar_view(state: ServiceState, query: dict[str, Any]) -> SimilarView:
    """Nearest sessions (or users) for a session id, a user id or a free-text description."""
    labels = _labels(state)
    flt = Filter(labels=[query["label"]] if query.get("label") else None,
                 categories=[query["category"]] if query.get("category") else None,
                 start_from=_date(query.get("start_from"), "start_from"),
                 start_to=_date(query.get("start_to"), "start_to"))
    given = {k: query[k] for k in ("session_id", "user_id", "text") if query.get(k)}
    if len(given) != 1:
        return SimilarView(query=query, results=[], labels=labels, error=None if not given
                           else "give one of session id, user id or description")
    req = SimilarRequest(k=query.get("k") or 10, filter=None if flt.is_empty() else flt,
                         with_text=True, **given)
    hits = state.similar(req)
    with state.lock.read():
        found = {s.session_id: s for s in state.rag.sessions.get_many(
            [h.session_id for h in hits])}
    rows = [SimilarRow(neighbor=h, colour=label_colour(h.meta.label, labels),
                       mini=mini_timeline(found[h.session_id]) if h.session_id in found
                       and found[h.session_id].events else None) for h in hits]
    return SimilarView(query=query, results=rows, labels=labels)


def fmt(value: Any) -> str:
    """A fact's value for people: shares as percentages, floats to 3 significant digits.

    >>> fmt([["cat_1", 0.5], ["cat_2", 0.25]]), fmt(0.123456), fmt(None)
    ('cat_1 (50%), cat_2 (25%)', '0.123', '-')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list) and value and all(isinstance(v, list) and len(v) == 2
                                                 for v in value):
        return ", ".join(f"{k} ({v:.0%})" if isinstance(v, float) and v <= 1 else f"{k} ({v})"
                         for k, v in value)
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)


def profile_view(state: ServiceState, user_id: str) -> ProfileView:
    """A user's profile with its dominant patterns (their sessions classified)."""
    prof = state.profile(user_id, False, True)
    with state.lock.read():
        starts = {s.session_id: s.start.strftime("%Y-%m-%d %H:%M") for s in
                  state.rag.sessions.get_many(prof.session_ids) if s.start}
    facts = [FactRow(name=k, value=fmt(f.value), sessions=f.sessions)
             for k, f in prof.facts.items()]
    return ProfileView(profile=prof, facts=facts, starts=starts)


class OverviewCache:
    """The overview's discovery, recomputed only when the index changed size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._value: Overview | None = None

    def get(self, state: ServiceState) -> Overview:
        with self._lock:
            key = (id(state.rag.index), state.index_size)
            if self._key != key or self._value is None:
                self._value, self._key = overview(state), key
            return self._value


def _patterns(state: ServiceState, ids: list[str], starts: dict[str, datetime]
              ) -> tuple[list[PatternRow], BarChart | None, str]:
    sample = sorted(random.Random(0).sample(ids, min(DISCOVER_SAMPLE, len(ids))))
    with state.lock.read():
        sessions = [s for s in state.rag.sessions.get_many(sample) if s.events]
    if len(sessions) < 10:
        return [], None, "too few sessions with events to discover patterns (10 needed)"
    try:
        d = discover(sessions, state.rag.embedder, k_range=(3, 8), settings=state.rag.settings)
    except BehaviorRagError as e:  # e.g. every session alike: the rest of the page still shows
        return [], None, f"no patterns found: {e.message}"
    colours = {c.name: LABEL_PALETTE[i % len(LABEL_PALETTE)] for i, c in enumerate(d.clusters)}
    rows = [PatternRow(**c.model_dump(), colour=colours[c.name]) for c in d.clusters]
    chart = stacked_bars([(starts[sid], name) for sid, name in d.assignments.items()
                          if sid in starts], colours)
    note = (f"k-means over text vectors and session facts of {len(sessions):,} sessions "
            f"(a seeded sample of {len(ids):,}); k = {d.k} by silhouette.")
    return rows, chart, note


def overview(state: ServiceState) -> Overview:
    """Counts, the label mix over time, and the patterns discovery finds in the sessions."""
    with state.lock.read():
        frame = state.rag.index.metadata()
    ids = frame["session_id"].to_list()
    starts = {sid: t for sid, t in zip(ids, frame["start"].to_list()) if t is not None}
    labels = _labels(state)
    tax = state.taxonomy
    stored = [(starts[sid], lab) for sid, lab in zip(ids, frame["label"].to_list())
              if lab is not None and sid in starts]
    counts = {lab: 0 for lab in labels}
    for _, lab in stored:
        counts[lab] = counts.get(lab, 0) + 1
    rows = [LabelRow(**lab.model_dump(), colour=label_colour(lab.name, labels),
                     count=counts.get(lab.name, 0)) for lab in (tax.labels if tax else [])]
    chart = stacked_bars(stored, {lab: label_colour(lab, labels) for lab in labels}) \
        if stored else None
    patterns, pchart, note = _patterns(state, ids, starts)
    return Overview(sessions=len(ids), users=frame["user_id"].n_unique(),
                    labelled=len(stored), labels=rows, label_chart=chart, patterns=patterns,
                    pattern_chart=pchart, discovery_note=note)
