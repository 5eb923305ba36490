"""Labels by the taxonomy's definitions: a session gets a label when exactly that one label's
definition (its ``requires`` / ``excludes``) holds, and none when zero or several do.

A label without a definition never labels by rule (nothing says what it looks like). The
report gives per label how many sessions its definition alone covers, how often it holds
together with another label (a conflict, left unlabelled), and — where the session already
has a label from a person, a file or the store (gold) — how often the rule label agrees.

Rules are cheap and exact about what they check, but a definition is a necessary condition
(``deal_hunter requires n_search >= 1``), not a sufficient one: precision against gold says how
far they can be trusted; `fit` then learns from them like from any other label.

Example:
    >>> from behavior_rag.synth import generate
    >>> from behavior_rag.taxonomy import load_taxonomy
    >>> r = rule_labels(generate(60, seed=1).sessions, load_taxonomy("personas"))
    >>> r.report.sessions, r.report.labelled == len(r.labels)
    (60, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from behavior_rag.facts import compute_facts
from behavior_rag.labels.labelset import NewLabel
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Session


class RuleCoverage(BaseModel):
    """One label's rule: sessions it alone labels, conflicts, and agreement with gold."""

    label: str
    defined: bool
    labelled: int = Field(description="Sessions where only this definition holds.")
    holds: int = Field(description="Sessions where this definition holds (alone or not).")
    conflicts: dict[str, int] = Field(default_factory=dict, description="Other label -> "
                                      "sessions where both definitions hold.")
    gold: int = Field(0, description="Rule-labelled sessions that have a gold label.")
    precision: float | None = Field(None, description="Share of those the rule got right "
                                    "(None: no gold).")


class RulesReport(BaseModel):
    taxonomy: str
    sessions: int
    labelled: int
    coverage: float
    none_hold: int
    conflicting: int
    per_label: list[RuleCoverage]
    precision: float | None = Field(None, description="Over all rule-labelled sessions "
                                    "with gold.")


class RuleLabels(BaseModel):
    labels: list[NewLabel]
    report: RulesReport


def holding(session: Session, taxonomy: Taxonomy) -> list[str]:
    """The defined labels whose definition ``session``'s facts meet (a fact without a value
    breaks nothing, as in classification)."""
    facts = compute_facts(session)
    return [lab.name for lab in taxonomy.labels
            if lab.predicates and not lab.violations(facts)]


def rule_labels(sessions: Sequence[Session], taxonomy: Taxonomy,
                gold: Mapping[str, str] | None = None) -> RuleLabels:
    """Label ``sessions`` where exactly one definition holds; ``gold``: session id -> known
    label (default: the sessions' own labels)."""
    gold = dict(gold) if gold is not None else {s.session_id: s.label for s in sessions
                                                  if s.label is not None}
    out: list[NewLabel] = []
    holds, alone, right, judged = Counter(), Counter(), Counter(), Counter()
    pairs: dict[str, Counter] = {n: Counter() for n in taxonomy.names}
    none = many = 0
    for s in sessions:
        h = holding(s, taxonomy)
        holds.update(h)
        for a in h:
            pairs[a].update(b for b in h if b != a)
        if len(h) == 1:
            out.append(NewLabel(session_id=s.session_id, label=h[0]))
            alone[h[0]] += 1
            if s.session_id in gold:
                judged[h[0]] += 1
                right[h[0]] += gold[s.session_id] == h[0]
        elif h:
            many += 1
        else:
            none += 1
    per = [RuleCoverage(label=lab.name, defined=bool(lab.predicates), labelled=alone[lab.name],
                        holds=holds[lab.name], conflicts=dict(pairs[lab.name]),
                        gold=judged[lab.name],
                        precision=round(right[lab.name] / judged[lab.name], 4)
                        if judged[lab.name] else None) for lab in taxonomy.labels]
    n_judged = sum(judged.values())
    return RuleLabels(labels=out, report=RulesReport(
        taxonomy=taxonomy.name, sessions=len(sessions), labelled=len(out),
        coverage=round(len(out) / len(sessions), 4) if sessions else 0.0,
        none_hold=none, conflicting=many, per_label=per,
        precision=round(sum(right.values()) / n_judged, 4) if n_judged else None))
