"""Evidence: claims about a session that code checks against the session and its facts.

Every item an LLM (or we) propose is verified: a cited fact must exist and equal the computed
value; cited event indices must exist and be of the claimed type. Unverifiable items are dropped
and counted. Explanations are written only from verified items, so even a 135M model cannot
make us state a purchase that never happened.

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
from functools import lru_cache
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined

from behavior_rag.resources import prompts_dir
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Evidence, Session, SessionFacts

DEFAULT_FACTS = ("n_events", "n_view", "n_search", "n_cart", "n_purchase", "duration_s")
_ENV = Environment(undefined=StrictUndefined, autoescape=False)


def same_value(claimed: Any, actual: Any) -> bool:
    if isinstance(actual, bool) or isinstance(claimed, bool):
        return claimed == actual
    if isinstance(actual, (int, float)) and isinstance(claimed, (int, float)):
        # Models round: accept what a 2-decimal rendering of the true value would say.
        return math.isclose(float(claimed), float(actual), rel_tol=1e-3, abs_tol=0.006)
    if isinstance(actual, list) and isinstance(claimed, list):
        return len(actual) == len(claimed) and all(same_value(a, b) for a, b in zip(claimed, actual))
    return claimed == actual


def check(item: Evidence, session: Session, facts: SessionFacts) -> Evidence | None:
    """The item, completed (fact's events filled in), if it holds; else None."""
    n = session.n_events
    if any(not isinstance(i, int) or not 0 <= i < n for i in item.events):
        return None
    if item.event_type is not None:
        if not item.events or any(session.events[i].type != item.event_type for i in item.events):
            return None
    if item.fact is None:
        return item if item.events else None
    fact = facts.get(item.fact)
    if fact is None or not same_value(item.value, fact.value):
        return None
    if item.events and not set(item.events) <= set(fact.events):
        return None  # the cited events are not the ones this fact rests on
    return item.model_copy(update={"value": fact.value, "events": item.events or fact.events})


def verify(items: list[Evidence], session: Session, facts: SessionFacts
           ) -> tuple[list[Evidence], int]:
    """(verified items, number dropped)."""
    kept = [c for c in (check(i, session, facts) for i in items) if c is not None]
    return kept, len(items) - len(kept)


@lru_cache(maxsize=1)
def _phrases() -> dict[str, Any]:
    return yaml.safe_load((prompts_dir() / "explain.yaml").read_text())


@lru_cache(maxsize=256)
def _template(source: str):
    # compiling a template costs ~100x rendering it; the phrase table is small and fixed
    return _ENV.from_string(source)


def evidence_for(label: str, facts: SessionFacts, taxonomy: Taxonomy) -> list[Evidence]:
    """Evidence for ``label`` from the facts its taxonomy entry names (or key facts)."""
    names = list(taxonomy.get(label).evidence_facts) if label in taxonomy else []
    table = _phrases()["facts"]
    out = []
    for name in names or DEFAULT_FACTS:
        fact = facts.get(name)
        if fact is None or fact.value is None or (isinstance(fact.value, list) and not fact.value):
            continue
        text = _template(table[name]).render(value=fact.value) if name in table else \
            f"{name} = {fact.value}"
        out.append(Evidence(fact=name, value=fact.value, events=fact.events, text=text))
    return out


def explanation(label: str, confidence: float, abstained: bool, evidence: list[Evidence]) -> str:
    """One sentence from verified evidence only."""
    p = _phrases()
    tpl = p["abstain_template"] if abstained else p["template"]
    return _template(tpl).render(label=label, confidence=confidence,
                                        phrases=[e.text for e in evidence if e.text]).strip()
