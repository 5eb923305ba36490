"""Is the evidence what the decision rests on? ERASER's faithfulness (DeYoung et al., 2020),
measured through the product itself.

For each answered prediction whose evidence cites events: classify the session again without
the cited events (*comprehensiveness*: how much the label's probability drops; higher is more
faithful) and with only the cited events (*sufficiency*: the drop from the full session to the
cited events alone; lower is better), each beside a baseline that removes / keeps the same
number of events drawn at random. Also: the share of predictions whose label or evidence
contradicts the label's definition (``requires`` / ``excludes``), and the share the definition
check moved.

Example:
    >>> f = faithfulness(test_sessions, preds, reclassify, taxonomy)      # doctest: +SKIP
    >>> f.comprehensiveness / f.comprehensiveness_random                   # doctest: +SKIP
    3.1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.facts import compute_facts
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session


class Faithfulness(BaseModel):
    """Means over the measured predictions (probabilities of the predicted label)."""

    predictions: int = Field(description="Predictions checked for contradictions.")
    measured: int = Field(description="Answered predictions whose evidence cites events "
                          "(and leaves some uncited): the ERASER rows.")
    comprehensiveness: float = Field(description="p(label | session) - p(label | session "
                                     "without the cited events).")
    comprehensiveness_random: float = Field(description="The same with as many random events "
                                            "removed.")
    sufficiency: float = Field(description="p(label | session) - p(label | cited events "
                                           "only); lower is better.")
    sufficiency_random: float = Field(description="The same keeping as many random events.")
    gap_ci: tuple[float, float] | None = Field(None, description="95 % bootstrap interval "
                                               "(over predictions) of comprehensiveness minus "
                                               "its random baseline.")
    cited_share: float = Field(description="Mean share of a session's events that are cited.")
    contradicting: float = Field(description="Share of answered predictions whose label's "
                                 "definition fails, or whose evidence cites a fact of a failed "
                                 "predicate.")
    moved: float = Field(description="Share of predictions the definition check moved away "
                         "from the model's top label.")


def contradicts(p: PatternPrediction, session: Session, taxonomy: Taxonomy) -> bool:
    """The answered label breaks its definition, or its evidence cites a fact of a predicate
    that fails."""
    if p.abstained or p.label not in taxonomy:
        return False
    label, facts = taxonomy.get(p.label), compute_facts(session)
    if label.violations(facts):
        return True
    failed = {q.fact for q, must in label.predicates if q.holds(facts) not in (None, must)}
    return any(e.fact in failed for e in p.evidence)


# Facts about *when* a session happened cite its first event as the clock they read; erasing
# that event leaves the time in the next one (same hour, same day), so erasure cannot test them.
TIMING_FACTS = frozenset({"start_hour", "part_of_day", "weekday", "days_since_previous"})


def rationale(p: PatternPrediction, s: Session) -> set[int]:
    """The events the evidence points at: those of its items that single events out. A fact
    that rests on every event (``n_events``, the median dwell) says "the whole session" and
    marks no part of it, so it is left out; removing it would empty the session. Timing facts
    (:data:`TIMING_FACTS`) are left out too: their event is the clock, not the reason."""
    return {i for e in p.evidence if len(set(e.events)) < s.n_events
            and e.fact not in TIMING_FACTS for i in e.events if 0 <= i < s.n_events}


def _without(s: Session, drop: set[int]) -> Session:
    return s.model_copy(update={"events": [e for i, e in enumerate(s.events) if i not in drop]})


def _only(s: Session, keep: set[int]) -> Session:
    return s.model_copy(update={"events": [e for i, e in enumerate(s.events) if i in keep]})


def faithfulness(sessions: Sequence[Session], preds: Sequence[PatternPrediction],
                 reclassify: Callable[[list[Session]], list[PatternPrediction]],
                 taxonomy: Taxonomy, seed: int = 0, draws: int = 3) -> Faithfulness:
    """ERASER rows for ``preds`` of ``sessions``; ``reclassify`` is the product's classify.
    Each random baseline is the mean over ``draws`` random event sets per prediction (one draw
    left the baseline's noise as large as the effect on ~70 rows)."""
    rng = np.random.default_rng(seed)
    rows, variants = [], []
    width = 2 + 2 * draws
    for s, p in zip(sessions, preds):
        cited = rationale(p, s)
        if p.abstained or not cited or len(cited) == s.n_events:
            continue
        rand = [set(rng.choice(s.n_events, size=len(cited), replace=False).tolist())
                for _ in range(draws)]
        rows.append((p, len(cited) / s.n_events))
        variants += [_without(s, cited), _only(s, cited), *(_without(s, r) for r in rand),
                     *(_only(s, r) for r in rand)]
    again = reclassify(variants) if variants else []
    prob = np.array([q.probabilities.get(p.label, 0.0) for (p, _), q in
                     zip([r for r in rows for _ in range(width)], again)]).reshape(-1, width)
    full = np.array([p.confidence for p, _ in rows]).reshape(-1, 1)
    drop = full - prob if len(rows) else np.zeros((0, width))
    n = len(preds)

    def mean(cols: slice) -> float:
        return float(drop[:, cols].mean()) if len(rows) else float("nan")

    return Faithfulness(
        predictions=n, measured=len(rows), comprehensiveness=mean(slice(0, 1)),
        gap_ci=_gap_ci(drop[:, 0] - drop[:, 2:2 + draws].mean(axis=1), seed),
        comprehensiveness_random=mean(slice(2, 2 + draws)), sufficiency=mean(slice(1, 2)),
        sufficiency_random=mean(slice(2 + draws, width)),
        cited_share=float(np.mean([c for _, c in rows])) if rows else float("nan"),
        contradicting=float(np.mean([contradicts(p, s, taxonomy)
                                     for s, p in zip(sessions, preds)])) if n else 0.0,
        moved=float(np.mean([any("moved to" in w for w in p.warnings) for p in preds]))
        if n else 0.0)


def _gap_ci(gap: np.ndarray, seed: int, n: int = 2000) -> tuple[float, float] | None:
    if len(gap) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = gap[rng.integers(0, len(gap), size=(n, len(gap)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)
