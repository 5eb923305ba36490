"""The data types that cross module lines: events, sessions and the facts computed from them.

Example:
    >>> from datetime import datetime, timezone
    >>> e = Event(user_id="u1", timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc),
    ...           type="view", item_id="42")
    >>> s = Session(session_id="s1", user_id="u1", events=[e])
    >>> s.n_events, s.start.isoformat()
    (1, '2024-01-01T00:00:00+00:00')
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from behavior_rag.bounds import (
    MAX_EVENTS,
    MAX_ID,
    MAX_PRICE,
    MAX_QUERY,
    MAX_YEAR,
    MIN_YEAR,
    check_attrs,
)

EventType = Literal["view", "search", "cart", "remove_from_cart", "fav", "purchase"]
EVENT_TYPES: tuple[str, ...] = ("view", "search", "cart", "remove_from_cart", "fav", "purchase")

# Scalars only: attrs are rendered and stored as columns, never arbitrary objects.
AttrValue = str | int | float | bool | None
# How finely a source records times, detected at ingest ("day": dates only).
TimeResolution = Literal["day", "second", "millisecond"]


def check_timezone(name: str | None) -> str | None:
    """``name`` if it is an IANA time zone (``Asia/Shanghai``, ``UTC``), else ValueError.

    >>> check_timezone("Asia/Shanghai")
    'Asia/Shanghai'
    """
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as e:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'UTC', "
                         "'Europe/Berlin' or 'Asia/Shanghai'") from e
    return name


class Event(BaseModel):
    """One clickstream event. ``timestamp`` is always timezone-aware (UTC when the source is naive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1, max_length=MAX_ID)
    session_id: str | None = Field(None, max_length=MAX_ID)
    timestamp: datetime
    type: EventType
    item_id: str | None = Field(None, max_length=MAX_ID)
    category: str | None = Field(None, max_length=MAX_ID)
    brand: str | None = Field(None, max_length=MAX_ID)
    price: float | None = Field(None, ge=0, le=MAX_PRICE, allow_inf_nan=False)
    query: str | None = Field(None, max_length=MAX_QUERY)
    attrs: dict[str, AttrValue] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if not MIN_YEAR <= v.year <= MAX_YEAR:
            raise ValueError(f"year {v.year} is outside {MIN_YEAR}..{MAX_YEAR}")
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)

    @field_validator("attrs")
    @classmethod
    def _attrs(cls, v: dict[str, AttrValue]) -> dict[str, AttrValue]:
        return check_attrs(v, "attrs")


class Session(BaseModel):
    """A user's events in time order, plus an optional label.

    Sources that only have one aggregate row per session (UCI online shoppers) give a session with
    no events and their numbers in ``aggregates``.
    """

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=MAX_ID)
    user_id: str = Field(min_length=1, max_length=MAX_ID)
    events: list[Event] = Field(default_factory=list, max_length=MAX_EVENTS)
    aggregates: dict[str, AttrValue] = Field(default_factory=dict)
    label: str | None = Field(None, max_length=MAX_ID)
    source: str | None = Field(None, max_length=MAX_ID)
    time_resolution: TimeResolution | None = Field(
        None, description="How finely the source records times (detected at ingest); 'day': "
        "times of day and dwell times are unknown, and facts that need them are None.")
    timezone: str | None = Field(
        None, description="IANA zone the source's shoppers live in (set per source at ingest, "
        "e.g. Taobao: Asia/Shanghai): time-of-day and weekday facts are computed there. None: "
        "the render.timezone setting.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return check_timezone(v)

    @field_validator("aggregates")
    @classmethod
    def _aggregates(cls, v: dict[str, AttrValue]) -> dict[str, AttrValue]:
        return check_attrs(v, "aggregates")

    @model_validator(mode="after")
    def _ordered(self) -> Session:
        ts = [e.timestamp for e in self.events]
        if any(b < a for a, b in zip(ts, ts[1:])):
            # Stable sort keeps the source order of simultaneous events.
            self.events = sorted(self.events, key=lambda e: e.timestamp)
        return self

    @property
    def n_events(self) -> int:
        return len(self.events)

    @property
    def start(self) -> datetime | None:
        return self.events[0].timestamp if self.events else None

    @property
    def end(self) -> datetime | None:
        return self.events[-1].timestamp if self.events else None

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds() if self.events else 0.0


# How a model reads a session-level aggregate: a quantity, a yes/no, or a code whose numbers
# are ids (browser 10 is not "more" than browser 2).
AggregateKind = Literal["numeric", "bool", "categorical"]


class DeclaredAggregate(BaseModel):
    """A session-level aggregate a source declares (UCI's ``PageValues`` is numeric, its
    ``Browser`` categorical): heads read ``Session.aggregates`` by these declarations, in
    their order, never by a dataset's column lists (:mod:`behavior_rag.ingest.aggregates`).

    Example:
        >>> DeclaredAggregate(name="Browser", kind="categorical").kind
        'categorical'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_ID)
    kind: AggregateKind


T = TypeVar("T")


class Citation(BaseModel):
    """Events of *another* session (a user's earlier one) that a fact rests on."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    events: list[int] = Field(default_factory=list, description="0-based positions in that "
                              "session's events (empty: the session as a whole).")


class Fact(BaseModel, Generic[T]):
    """A number (or short value) computed by code, with the event indices it rests on.

    ``events`` are 0-based positions in ``Session.events``; empty for aggregate-only sessions and
    for facts that rest on no event (e.g. zero purchases). ``cites``: events of the user's
    earlier sessions, for cross-session facts (:mod:`behavior_rag.history`).
    """

    model_config = ConfigDict(frozen=True)

    value: T
    events: list[int] = Field(default_factory=list)
    cites: list[Citation] = Field(default_factory=list)


class RepeatView(BaseModel):
    item_id: str
    count: int
    events: list[int]


class SessionFacts(BaseModel):
    """What code knows for certain about a session. Explanations may only cite these.

    Use :meth:`as_dict` for a flat ``name -> Fact`` view (the names evidence refers to).
    """

    n_events: Fact[int]
    n_view: Fact[int]
    n_search: Fact[int]
    n_cart: Fact[int]
    n_remove_from_cart: Fact[int]
    n_fav: Fact[int]
    n_purchase: Fact[int]
    duration_s: Fact[float]
    dwell_s: Fact[list[float]] = Field(description="Seconds from each event to the next.")
    dwell_median_s: Fact[float | None]
    dwell_max_s: Fact[float | None]
    distinct_items: Fact[int]
    distinct_categories: Fact[int]
    distinct_brands: Fact[int]
    price_min: Fact[float | None]
    price_median: Fact[float | None]
    price_max: Fact[float | None]
    queries: Fact[list[str]]
    carted_items: Fact[int]
    purchased_items: Fact[int]
    carted_not_purchased: Fact[int]
    cart_abandoned: Fact[bool] = Field(description="Something was carted and none of the carted "
                                       "items was bought in this session.")
    max_views_one_item: Fact[int]
    repeat_viewed_items: Fact[int]
    repeat_views: list[RepeatView]
    start_hour: Fact[int | None]
    part_of_day: Fact[str | None]
    weekday: Fact[str | None]
    aggregates: dict[str, Fact[AttrValue]] = Field(default_factory=dict)
    history: dict[str, Fact] = Field(default_factory=dict, description="Cross-session facts "
                                     "(the user's earlier sessions, purchase propensities), "
                                     "when the classifier knows a history.")
    unknown: dict[str, str] = Field(default_factory=dict, description="Facts the data cannot "
                                    "support (their value is None or empty) -> why.")

    def as_dict(self) -> dict[str, Fact]:
        """Flat ``name -> Fact`` (aggregates under their own names)."""
        out = {name: getattr(self, name) for name, f in type(self).model_fields.items()
               if isinstance(getattr(self, name), Fact)}
        out.update(self.aggregates)
        out.update(self.history)
        return out

    def get(self, name: str) -> Fact | None:
        # the hot path of evidence checks: no flat dict per lookup (same precedence as as_dict)
        for extra in (self.history, self.aggregates):
            if name in extra:
                return extra[name]
        v = getattr(self, name, None) if name in type(self).model_fields else None
        return v if isinstance(v, Fact) else None


class Evidence(BaseModel):
    """One claim about the query session, checkable by code.

    Cites a fact (name + claimed value) and/or event indices (optionally with the event type
    they are claimed to be). Unverifiable items are dropped before a prediction is returned.
    """

    fact: str | None = None
    value: Any = None
    events: list[int] = Field(default_factory=list)
    event_type: EventType | None = None
    text: str = ""
    cites: list[Citation] = Field(default_factory=list, description="Events of the user's "
                                  "earlier sessions the claim rests on (cross-session facts).")
    contribution: float | None = Field(None, description="How much this fact moved the facts "
                                       "head toward the label (TreeSHAP, in log-odds): "
                                       "> 0 in `evidence`, < 0 in `against`; None: not from "
                                       "the facts head (a label definition, or the LLM).")


class Voter(BaseModel):
    """A labelled neighbour that voted for the predicted label in the kNN head."""

    session_id: str
    label: str
    similarity: float


class PatternPrediction(BaseModel):
    """A classification: label, calibrated probabilities, and verified evidence."""

    session_id: str
    label: str
    probabilities: dict[str, float]
    confidence: float
    abstained: bool
    explanation: str
    out_of_domain: bool = Field(False, description="The session is unlike the sessions the "
                                "model was fitted on (its facts outside their ranges; "
                                "`warnings` says which): the prediction abstains.")
    by_elimination: bool = Field(False, description="The label is the only one whose "
                                 "definition holds; ``confidence`` is then the model's own "
                                 "probability for it, not the 1.0 left after the exclusions.")
    threshold: float | None = Field(None, description="Two-label taxonomies with a positive "
                                    "label: the positive label is given from this probability "
                                    "on (fitted on dev for its F1), so its confidence may be "
                                    "well below 0.5. None: the most probable label.")
    evidence: list[Evidence] = Field(description="Verified facts that moved the decision "
                                     "toward the label, strongest first.")
    against: list[Evidence] = Field(default_factory=list, description="Verified facts that "
                                    "argued against the label (never shown as support).")
    voters: list[Voter] = Field(default_factory=list, description="Nearest labelled sessions "
                                "(other users) that carry the label, most similar first.")
    llm_margin: float | None = Field(None, description="When the LLM was asked: its "
                                     "log-probability of the label minus its best other label's.")
    evidence_dropped: int = 0
    neighbors: list[str] = Field(default_factory=list, description="Session ids of the "
                                 "labelled examples used.")
    source: Literal["knn", "knn+llm", "stack", "stack+llm", "fused", "llm"] = Field(
        "stack", description="stack: the fitted heads decided; stack+llm: the LLM was asked "
        "too (cascade); knn / knn+llm: no fitted model, the default model's kNN vote (and the "
        "LLM's scores). fused / llm: predictions made before the default model replaced fusion.")
    decided_by: list[str] = Field(default_factory=list, description="The heads whose outputs "
                                  "made the probabilities (the stack's chosen heads, + llm).")
    llm_asked: bool = False
    head_probabilities: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Each fitted head's own probabilities.")
    fallback_reason: str | None = None
    llm_scores: dict[str, float] | None = None
    knn_vote: dict[str, float] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds: `prepare_s` "
                                      "(render, embed, retrieve, prompt: the whole batch's, "
                                      "which every session in it waited for) and `llm_s` (this "
                                      "session's model call, queueing at the engine included).")
    warnings: list[str] = Field(default_factory=list, description="Things the user should know "
                                "about this prediction (e.g. instruction-like free text cut).")


def utc(ts: float | int) -> datetime:
    """Unix seconds -> aware UTC datetime."""
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class ChatMessage(BaseModel):
    """One chat turn sent to an LLM backend (prompt files render to these)."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str
