"""How far the LLM's label suggestions can be trusted, measured on the analyst's own labels.

The label set's audit trail measures it with no extra bookkeeping: when a person labels a
session whose latest label was the LLM's suggestion, the new event records that suggestion as
``previous`` (``previous_source == "llm"``). Agreement is the share of those where the person
chose the same label. The suggestions then count as weak labels only with the weight that
agreement earns over the heads' own accuracy (the fitted model's dev accuracy; without a
model, always answering the most common human label): ``(a - h) / (1 - h)``, clipped to
[0, 1] — 0 when the LLM does not beat the heads, or before :data:`MIN_JUDGED` suggestions
were judged.

Example:
    >>> from behavior_rag.labels.labelset import LabelSet, NewLabel
    >>> s = LabelSet().append([NewLabel(session_id="a", label="x")], source="llm", who="llm")
    >>> s = s.append([NewLabel(session_id="a", label="x")], source="human", who="ana")
    >>> llm_agreement(s, heads_rate=0.5, min_judged=1).weight
    1.0
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from behavior_rag.labels.labelset import LabelSet

MIN_JUDGED = 20


class Agreement(BaseModel):
    """The LLM's suggestions against the analyst's labels, and the weight that earns."""

    judged: int = Field(description="Human labels given to sessions the LLM had labelled.")
    agreed: int
    rate: float | None = Field(None, description="agreed / judged (None: nothing judged).")
    heads_rate: float | None = Field(None, description="What the LLM must beat.")
    weight: float = Field(0.0, description="Weight of LLM labels in fit (0: not used).")
    why: str


def llm_agreement(labels: LabelSet, heads_rate: float | None, *,
                  min_judged: int = MIN_JUDGED) -> Agreement:
    """See the module docstring; ``heads_rate`` None: the most common human label's share."""
    judged = [e for e in labels.events if e.source == "human" and e.previous_source == "llm"]
    agreed = sum(e.label == e.previous for e in judged)
    if heads_rate is None:
        humans = Counter(e.label for e in labels.latest(("human",)).values())
        heads_rate = max(humans.values()) / sum(humans.values()) if humans else None
    rate = agreed / len(judged) if judged else None
    if len(judged) < min_judged or rate is None or heads_rate is None:
        why = f"{len(judged)} suggestions judged; {min_judged} needed before they count"
        return Agreement(judged=len(judged), agreed=agreed, rate=rate, heads_rate=heads_rate,
                         why=why)
    weight = max(0.0, min(1.0, (rate - heads_rate) / (1 - heads_rate))) if heads_rate < 1 \
        else 0.0
    why = (f"agrees with {rate:.0%} of {len(judged)} judged labels vs {heads_rate:.0%} for "
           f"the heads: " + ("weight 0, it does not beat them" if weight == 0 else
                             f"weight {weight:.2f}"))
    return Agreement(judged=len(judged), agreed=agreed, rate=round(rate, 4),
                     heads_rate=round(heads_rate, 4), weight=round(weight, 4), why=why)
