"""What crosses the live-session seam: the append request, the score, and the answers of
``POST /v1/live/{id}/events``, ``GET /v1/live/{id}``, ``DELETE /v1/live/{id}`` (the service,
the clients and the replay command share these classes).

Example:
    >>> from datetime import datetime, timezone
    >>> body = LiveEvents(events=[{"user_id": "u1", "type": "view", "item_id": "42",
    ...                            "timestamp": datetime(2024, 1, 1, tzinfo=timezone.utc)}])
    >>> body.events[0].type
    'view'
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from behavior_rag.types import Event, Evidence, PatternPrediction

EndReason = Literal["deleted", "gap", "evicted", "shutdown"]


class LiveEvents(BaseModel):
    """``POST /v1/live/{session_id}/events``: events in time order (equal times allowed).

    An event equal to one the session already has (a retried request) is skipped and counted
    in ``duplicates``; an event older than the session's last one is refused (422 naming
    ``events.N.timestamp``) and nothing of the request is kept.
    """

    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, description="At most `serve.max_batch` per "
                                "request; every event's user_id must be the session's.")


class LiveScore(BaseModel):
    """The prediction on the events the model may see (before its target's prediction point)."""

    label: str
    probability: float = Field(description="The model's probability of `label`.")
    probabilities: dict[str, float]
    threshold: float | None = Field(None, description="Two-label targets: the positive label "
                                    "is given from this probability on.")
    abstained: bool = False
    evidence: list[Evidence] = Field(default_factory=list, description="Verified facts that "
                                     "moved the decision toward the label, strongest first.")
    against: list[Evidence] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    events: int = Field(description="Events of the session this score was computed on.")
    visible: int = Field(description="Of those, events the model saw (the target's cut).")

    @classmethod
    def of(cls, pred: PatternPrediction, events: int, visible: int) -> LiveScore:
        """The live view of a prediction."""
        return cls(label=pred.label, probability=pred.probabilities.get(pred.label, 0.0),
                   probabilities=pred.probabilities, threshold=pred.threshold,
                   abstained=pred.abstained, evidence=pred.evidence, against=pred.against,
                   warnings=pred.warnings, events=events, visible=visible)

    def moved(self, other: LiveScore | None, tol: float = 1e-6) -> bool:
        """Whether this score says something ``other`` did not (label, probabilities beyond
        ``tol``, abstention, evidence)."""
        if other is None:
            return True
        if (self.label, self.abstained) != (other.label, other.abstained):
            return True
        if any(abs(p - other.probabilities.get(k, -1.0)) > tol
               for k, p in self.probabilities.items()):
            return True
        return [e.fact for e in self.evidence] != [e.fact for e in other.evidence]


class LiveAnswer(BaseModel):
    """The answer to an append: ``changed`` false means the prediction did not move (or was
    not recomputed: nothing the model sees was added), and ``prediction`` is then omitted."""

    session_id: str
    user_id: str = Field(description="The session's user, pseudonymised.")
    added: int = Field(description="Events of this request that were appended.")
    duplicates: int = Field(0, description="Events skipped: equal to one the session has.")
    events: int = Field(description="Events in the session now.")
    visible: int = Field(description="Of those, events the model may see.")
    changed: bool
    prediction: LiveScore | None = None
    pending: bool = Field(False, description="Visible events not scored yet (the service was "
                          "busy, or a vector model re-scores every live.rescore_every events): "
                          "GET the session later.")
    opened: bool = Field(False, description="This request opened the session.")


class LiveView(BaseModel):
    """``GET /v1/live/{session_id}``: an open session's state."""

    session_id: str
    user_id: str
    events: int
    visible: int
    first_event: datetime | None = None
    last_event: datetime | None = None
    idle_s: float = Field(description="Seconds since the last append (server clock).")
    ends_in_s: float = Field(description="Seconds until the inactivity gap ends it.")
    prediction: LiveScore | None = None
    pending: bool = False


class LiveEnd(BaseModel):
    """``DELETE /v1/live/{session_id}``: the session ended; ``committed`` says whether it is
    in the index already (``?commit=true``) or queued for the next commit."""

    session_id: str
    events: int
    reason: EndReason = "deleted"
    committed: bool = False


class LiveList(BaseModel):
    """Open sessions, most recently active first (the web view's table)."""

    open: int
    pending_commit: int
    sessions: list[LiveView]
