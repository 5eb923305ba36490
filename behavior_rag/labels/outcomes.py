"""Labelling a log by an outcome target: each session labelled on its whole log (looking ahead
in the user's later sessions for the ``comes_back`` rules), then cut at its prediction point;
what is left out (nothing before the point, censored, not eligible) is counted.

Example:
    >>> from behavior_rag.synth import generate
    >>> out = label_sessions(generate(50, seed=1).sessions, "purchase")
    >>> out.n_in == len(out.sessions) + out.dropped_empty
    True
    >>> all(e.type not in ("cart", "purchase") for s in out.sessions for e in s.events)
    True
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from behavior_rag.labels.targets import EmptyAfterCut, InputCut, Target, load_target
from behavior_rag.types import Session


class LabelledSessions(BaseModel):
    """What :func:`label_sessions` gives: the labelled, cut sessions and what was left out."""

    target: str
    input: str
    sessions: list[Session]
    n_in: int
    dropped_empty: int = Field(0, description="Too few events before the prediction point.")
    dropped_censored: int = Field(0, description="comes_back rules: the N-day window runs "
                                  "past the log's last event, so the outcome is unseen.")
    dropped_not_eligible: int = Field(0, description="No event of the rule's `eligible` types.")
    labels: dict[str, int] = Field(default_factory=dict, description="Sessions per label.")
    empty_examples: list[str] = Field(default_factory=list, description="A few session ids "
                                      "dropped as empty.")


class _Later:
    """Per user, the sorted times of events (optionally of some types) and their sessions."""

    def __init__(self, sessions: Sequence[Session], types: Sequence[str]) -> None:
        rows: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        self.horizon: datetime | None = None
        for s in sessions:
            for e in s.events:
                if self.horizon is None or e.timestamp > self.horizon:
                    self.horizon = e.timestamp
                if not types or e.type in types:
                    rows[s.user_id].append((e.timestamp, s.session_id))
        self._by_user = {u: sorted(r) for u, r in rows.items()}

    def any_between(self, user: str, after: datetime, until: datetime, not_session: str) -> bool:
        rows = self._by_user.get(user, [])
        i = bisect_right(rows, (after, "\U0010ffff"))  # strictly after ``after``
        for t, sid in rows[i:]:
            if t > until:
                return False
            if sid != not_session:
                return True
        return False


def outcome(session: Session, target: Target, later: _Later | None = None) -> str | None:
    """The target's label for the full ``session`` (``None``: it cannot be told, see
    :class:`LabelRule`)."""
    rule = target.rule
    if rule.eligible and not any(e.type in rule.eligible for e in session.events):
        return None
    if rule.kind == "contains":
        hit = any(e.type in rule.types for e in session.events)
        return target.positive if hit else target.negative
    if later is None or not session.events or later.horizon is None:
        return None
    assert rule.days is not None
    end = session.events[-1].timestamp
    until = end + timedelta(days=rule.days)
    if until > later.horizon:
        return None
    hit = later.any_between(session.user_id, end, until, session.session_id)
    return target.positive if hit else target.negative


def label_sessions(sessions: Sequence[Session], target: Target | str | Path, *,
                   later: Sequence[Session] | None = None,
                   input: str | InputCut | None = None) -> LabelledSessions:
    """Label full sessions by ``target``'s rule, then cut each at its prediction point
    (``input`` overrides the target's). ``later``: the users' sessions the ``comes_back``
    rules look ahead in, in full (default: ``sessions`` themselves, e.g. a whole store).
    Sessions left with too few events, unlabelable (censored) or not eligible are left out
    and counted; input order is kept otherwise.
    """
    target = load_target(target).with_input(input)
    look = _Later(later if later is not None else sessions, target.rule.types) \
        if target.rule.needs_later else None
    out: list[Session] = []
    counts: Counter[str] = Counter()
    empty: list[str] = []
    n_empty = n_censored = n_ineligible = 0
    for s in sessions:
        rule = target.rule
        if rule.eligible and not any(e.type in rule.eligible for e in s.events):
            n_ineligible += 1
            continue
        try:
            seen = target.cut(s)
        except EmptyAfterCut:
            n_empty += 1
            if len(empty) < 5:
                empty.append(s.session_id)
            continue
        label = outcome(s, target, look)
        if label is None:
            n_censored += 1
            continue
        out.append(seen.model_copy(update={"label": label}))
        counts[label] += 1
    return LabelledSessions(target=target.name, input=str(target.input), sessions=out,
                            n_in=len(sessions), dropped_empty=n_empty,
                            dropped_censored=n_censored, dropped_not_eligible=n_ineligible,
                            labels={k: counts[k] for k in target.labels()},
                            empty_examples=empty)
