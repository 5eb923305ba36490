"""Evidence: claims about a session that code checks against the session and its facts, and
that point the same way as the decision.

Every item an LLM (or we) propose is verified: a cited fact must exist and equal the computed
value; cited event indices must exist and be of the claimed type. Unverifiable items are dropped
and counted, so even a 135M model cannot make us state a purchase that never happened.

What is *shown as support* is what moved the decision: the facts with a positive contribution
toward the label in the facts head (TreeSHAP), or, without one, the facts of the label's own
definition that the session meets. Facts that pushed against the label go to ``against``.
:func:`check_definitions` keeps a prediction from breaking its label's definition.

Example:
    >>> from behavior_rag.synth import generate
    >>> from behavior_rag.facts import compute_facts
    >>> s = generate(1, seed=0).sessions[0]; f = compute_facts(s)
    >>> kept, dropped = verify([Evidence(fact="n_events", value=f.n_events.value),
    ...                         Evidence(fact="n_events", value=-1)], s, f)
    >>> len(kept), dropped
    (1, 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

from pydantic import BaseModel

from behavior_rag.history import check_citations
from behavior_rag.phrases import fact_phrase
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Evidence, Session, SessionFacts

# Event fields a claim may name (``fact="item_id", value="123", events=[...]``): verified
# against the cited events themselves (the items head's evidence).
EVENT_FIELDS = {"item": "item_id", "category": "category"}
EVENT_FIELDS = {**EVENT_FIELDS, **{v: v for v in EVENT_FIELDS.values()}}


def same_value(claimed: Any, actual: Any) -> bool:
    if isinstance(actual, bool) or isinstance(claimed, bool):
        return claimed == actual
    if isinstance(actual, (int, float)) and isinstance(claimed, (int, float)):
        # Models round: accept what a 2-decimal rendering of the true value would say.
        return math.isclose(float(claimed), float(actual), rel_tol=1e-3, abs_tol=0.006)
    if isinstance(actual, list) and isinstance(claimed, list):
        return len(actual) == len(claimed) and all(same_value(a, b) for a, b in zip(claimed, actual))
    return claimed == actual


def check(item: Evidence, session: Session, facts: SessionFacts,
          earlier: Sequence[Session] | None = None) -> Evidence | None:
    """The item, completed (fact's events filled in), if it holds; else None. A cross-session
    fact holds only if ``earlier`` (the user's earlier sessions) has every session it cites."""
    if not _in_range(item.events, session.n_events):
        return None
    if item.event_type is not None:
        if not item.events or any(session.events[i].type != item.event_type for i in item.events):
            return None
    if item.fact is None:
        return item if item.events else None
    if item.fact in EVENT_FIELDS:  # "these events are on item / in category X"
        ok = item.events and all(getattr(session.events[i], item.fact) == item.value
                                 for i in item.events)
        return item if ok else None
    fact = facts.get(item.fact)
    if fact is None or not same_value(item.value, fact.value):
        return None
    if item.events and item.events != fact.events and not set(item.events) <= set(fact.events):
        return None  # the cited events are not the ones this fact rests on
    if fact.cites or item.cites:
        if earlier is None or not check_citations(fact, session, earlier) or (
                item.cites != fact.cites  # our own claims carry the fact's very citations
                and not {c.session_id for c in item.cites} <= {c.session_id for c in fact.cites}):
            return None
    if item.value is fact.value and (item.events or not fact.events) and \
            (item.cites or not fact.cites) and _COMPLETED <= item.model_fields_set:
        return item  # our own claim, already complete: a copy would be equal
    return item.model_copy(update={"value": fact.value, "events": item.events or fact.events,
                                   "cites": item.cites or fact.cites})


_COMPLETED = frozenset({"value", "events", "cites"})


def _in_range(events: list, n: int) -> bool:
    """Every index an int in ``0..n-1`` (in C: these lists run to a session's length)."""
    return all(map(isinstance, events, repeat(int))) and \
        (not events or (min(events) >= 0 and max(events) < n))


def verify(items: list[Evidence], session: Session, facts: SessionFacts,
           earlier: Sequence[Session] | None = None) -> tuple[list[Evidence], int]:
    """(verified items, number dropped)."""
    kept = [c for c in (check(i, session, facts, earlier) for i in items) if c is not None]
    return kept, len(items) - len(kept)


class LabelCheck(BaseModel):
    """The probabilities after the label definitions: labels whose ``requires`` / ``excludes``
    the session breaks get probability 0, the rest are renormalised (conditioning on what code
    knows). ``moved_from``: the model's top label when its definition failed; ``abstain``: no
    label's definition holds."""

    probs: dict[str, float]
    label: str
    moved_from: str | None = None
    reasons: list[str] = []
    abstain: bool = False
    eliminated: bool = False  # the only label whose definition holds, others excluded

    @property
    def warning(self) -> str | None:
        if self.abstain:
            return f"no label's definition holds ({'; '.join(self.reasons)}): abstained"
        if self.moved_from:
            return (f"{self.moved_from} {'; '.join(self.reasons)}: moved to {self.label} "
                    f"(the best label whose definition holds)")
        return None


def top_label(probs: Mapping[str, float], decision: tuple[str, float] | None = None) -> str:
    """The most probable label, or with ``decision = (positive, threshold)`` and two labels:
    the positive one when its probability reaches the threshold, the other one below it.

    Example:
        >>> top_label({"buy": 0.2, "no": 0.8}), top_label({"buy": 0.2, "no": 0.8}, ("buy", 0.1))
        ('no', 'buy')
    """
    if decision is not None and len(probs) == 2 and decision[0] in probs:
        pos, t = decision
        return pos if probs[pos] >= t else next(k for k in probs if k != pos)
    return max(probs, key=probs.get)


def check_definitions(probs: dict[str, float], facts: SessionFacts,
                      taxonomy: Taxonomy, decision: tuple[str, float] | None = None
                      ) -> LabelCheck:
    """Apply the taxonomy's label predicates to model probabilities (``decision``: see
    :func:`top_label`).

    Example:
        >>> from behavior_rag.synth import generate
        >>> from behavior_rag.facts import compute_facts
        >>> from behavior_rag.taxonomy import load_taxonomy
        >>> s = next(x for x in generate(40, seed=0).sessions if x.label == "window_shopper")
        >>> c = check_definitions({"cart_abandoner": 0.7, "window_shopper": 0.3},
        ...                       compute_facts(s), load_taxonomy())
        >>> c.label, c.moved_from, c.probs["window_shopper"]
        ('window_shopper', 'cart_abandoner', 1.0)
    """
    top = top_label(probs, decision)
    bad = {k: taxonomy.get(k).violations(facts) if k in taxonomy else [] for k in probs}
    ok = {k: v for k, v in probs.items() if not bad[k]}
    total = sum(ok.values())
    if not ok or total <= 0:
        return LabelCheck(probs=probs, label=top, reasons=bad[top], abstain=True)
    new = {k: (v / total if k in ok else 0.0) for k, v in probs.items()}
    label = top_label(ok, decision)
    # one label left because the definitions excluded every other: its renormalised 1.0
    # says nothing about how sure the model was
    eliminated = len(ok) == 1 and len(probs) > 1
    return LabelCheck(probs=new, label=label, moved_from=None if label == top else top,
                      reasons=bad[top], eliminated=eliminated)


@lru_cache(maxsize=4096)
def _kept_phrase(name: str, value_repr: str, value: Any) -> str:
    return fact_phrase(name, value)


def phrase(name: str, value: Any) -> str:
    """:func:`~behavior_rag.phrases.fact_phrase`, kept for scalar values: the same few values
    recur across sessions, and rendering the template each time was a large share of a
    facts-only classification. Keyed by ``repr``, so ``1``, ``1.0`` and ``True`` stay apart.

    Example:
        >>> phrase("n_purchase", 1) == phrase("n_purchase", 1) == "1 purchase"
        True
    """
    if isinstance(value, (str, int, float, type(None))):
        return _kept_phrase(name, repr(value), value)
    return fact_phrase(name, value)


def _item(name: str, facts: SessionFacts, contribution: float | None = None) -> Evidence | None:
    fact = facts.get(name)
    if fact is None or fact.value is None or (isinstance(fact.value, list) and not fact.value):
        return None
    return Evidence(fact=name, value=fact.value, events=fact.events, cites=fact.cites,
                    text=phrase(name, fact.value), contribution=contribution)


def definition_evidence(label: str, facts: SessionFacts, taxonomy: Taxonomy) -> list[Evidence]:
    """The facts of ``label``'s definition that the session meets (support by definition)."""
    if label not in taxonomy:
        return []
    names: list[str] = []
    for pred, must in taxonomy.get(label).predicates:
        if pred.holds(facts) == must and pred.fact not in names:
            names.append(pred.fact)
    return [e for e in (_item(n, facts) for n in names) if e is not None]


def event_field_evidence(name: str, session: Session, contribution: float | None = None
                         ) -> Evidence | None:
    """``item:<id>`` / ``category:<id>`` as a claim citing the session's events on it."""
    kind, _, value = name.partition(":")
    field = EVENT_FIELDS.get(kind)
    if field is None or not value:
        return None
    idx = [i for i, e in enumerate(session.events) if getattr(e, field) == value]
    if not idx:
        return None
    what = "item" if field == "item_id" else "category"
    n = len(idx)
    return Evidence(fact=field, value=value, events=idx, contribution=contribution,
                    text=f"{what} {value} ({n} event{'s' if n != 1 else ''})")


def contribution_evidence(contrib: Mapping[str, float], facts: SessionFacts, *, top: int = 3,
                          top_against: int = 3, min_abs: float = 0.01, min_share: float = 0.0,
                          session: Session | None = None
                          ) -> tuple[list[Evidence], list[Evidence]]:
    """``(evidence, against)`` from per-fact contributions toward the label: the strongest
    positive ones (support) and the strongest negative ones (against), each with its events.
    Three reasons by default: a fourth added mostly session-wide facts, and the cited events
    then covered most of the session (eval reports: faithfulness). ``min_share``: a reason
    must carry at least this share of the strongest one's contribution (weak reasons cite
    events the decision barely rests on).

    Example:
        >>> from behavior_rag.synth import generate
        >>> from behavior_rag.facts import compute_facts
        >>> f = compute_facts(generate(1, seed=0).sessions[0])
        >>> ev, against = contribution_evidence({"n_view": 0.8, "n_cart": -0.3}, f)
        >>> [e.fact for e in ev], [e.fact for e in against]
        (['n_view'], ['n_cart'])
    """
    ranked = sorted(contrib.items(), key=lambda kv: -abs(kv[1]))

    def first(sign: int, n: int) -> list[Evidence]:
        out: list[Evidence] = []  # built lazily: phrases are rendered for the kept ones only
        floor = min_abs
        for name, c in ranked:
            if len(out) == n:
                break
            if sign * c < floor:
                continue
            e = _item(name, facts, round(c, 4)) if ":" not in name or session is None else \
                event_field_evidence(name, session, round(c, 4))
            if e is not None:
                out.append(e)
                floor = max(min_abs, min_share * abs(out[0].contribution or 0.0))
        return out

    return first(1, top), first(-1, top_against)
