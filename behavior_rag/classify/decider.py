"""The decider: the model's probabilities, moved by the LLM where the cascade asks it, checked
against the label definitions, with evidence that points the decision's way.

One path for every model: a fitted one (heads → stack → cascade) or, for an index nobody
fitted, the default model (the kNN vote, the LLM asked on every session and weighted by half).
The LLM's label scores are combined by :func:`behavior_rag.heads.cascade.combine` alone.

Example:
    >>> Decider(taxonomy, settings).decide(prepared, model, step, featurizer)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from behavior_rag.classify.featurizer import Featurizer, Prepared, head_inputs
from behavior_rag.classify.llm_step import LLMResult, LLMStep
from behavior_rag.evidence import (
    check_definitions,
    contribution_evidence,
    definition_evidence,
    verify,
)
from behavior_rag.heads.base import HeadInputs
from behavior_rag.heads.cascade import CascadeParams, asks, combine
from behavior_rag.heads.model import HeadOutputs, HeadsModel
from behavior_rag.phrases import sentence
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Voter

# The default model asks the LLM about every session (no dev data to fit a cascade on) and
# gives its calibrated scores half the weight, as the fusion it replaces did.
DEFAULT_CASCADE = CascadeParams(threshold=1.0 + 1e-6, w_llm=0.5)


class Decider:
    """Decisions and their evidence for one taxonomy."""

    def __init__(self, taxonomy: Taxonomy, settings: Settings) -> None:
        self.taxonomy, self.settings = taxonomy, settings
        self.labels = list(taxonomy.names)

    def ask_mask(self, stacked: np.ndarray, step: LLMStep, cascade: CascadeParams) -> np.ndarray:
        """Which sessions the LLM is asked for, by ``classify.llm``."""
        mode = self.settings.classify.llm
        if step.llm is None or mode == "never":
            return np.zeros(len(stacked), dtype=bool)
        if mode == "always":
            return np.ones(len(stacked), dtype=bool)
        return asks(stacked, cascade)

    @staticmethod
    def score(prepared: list[Prepared], heads: HeadsModel, extra_heads: Sequence[str] = ()
              ) -> tuple[HeadInputs, HeadOutputs]:
        """The heads' rows and outputs (with contributions from a fitted model); the part of
        :meth:`decide` that may run in another thread."""
        rows = head_inputs(prepared, history=heads.history)
        return rows, heads.predict(rows, explain=heads.fitted, heads=extra_heads)

    def decide(self, prepared: list[Prepared], heads: HeadsModel, cascade: CascadeParams,
               step: LLMStep, featurizer: Featurizer, *, extra_heads: Sequence[str] = (),
               scored: tuple[HeadInputs, HeadOutputs] | None = None
               ) -> list[PatternPrediction]:
        """Predictions of ``prepared`` (``scored``: :meth:`score`'s result, when it ran
        already)."""
        rows, out = scored or self.score(prepared, heads, extra_heads)
        ask = self.ask_mask(out.stacked, step, cascade)
        results = step.where(featurizer, prepared, ask)
        odd = heads.domain.check(rows.fact_matrix()) if heads.domain is not None \
            else [[] for _ in prepared]
        return [self._one(p, r, out, i, heads, cascade, odd[i]) for i, (p, r) in
                enumerate(zip(prepared, results))]

    def _one(self, p: Prepared, r: LLMResult, out: HeadOutputs, i: int, heads: HeadsModel,
             cascade: CascadeParams, odd: list[str]) -> PatternPrediction:
        row = out.stacked[i: i + 1]
        if r.scores is not None:
            row = combine(row, [r.scores], self.labels, cascade)
        per_head = {h: dict(zip(self.labels, v[i].tolist())) for h, v in out.heads.items()}
        contrib = (lambda lab: out.contributions_of(i, self.labels.index(lab))) \
            if out.contributions is not None else None
        base = "stack" if heads.fitted else "knn"
        return self.predict(
            p, dict(zip(self.labels, row[0].tolist())), heads.abstain_below, r, contrib,
            decision=heads.decision(), source=f"{base}+llm" if r.scores is not None else base,
            llm_asked=r.asked, decided_by=heads.chosen + (["llm"] if r.scores is not None
                                                          else []),
            head_probabilities=per_head if heads.fitted else {},
            knn_vote=per_head.get("knn", {}), odd=odd)

    def predict(self, p: Prepared, probs: dict[str, float], abstain_below: float,
                llm: LLMResult, contrib: Callable[[str], dict[str, float]] | None = None,
                decision: tuple[str, float] | None = None, odd: Sequence[str] = (),
                **extra) -> PatternPrediction:
        """The label after its definition check (``decision``: the fitted threshold of a
        positive label), and evidence that points its way: ``contrib(label)`` (the heads'
        contributions) or the label's definition."""
        checked = check_definitions(probs, p.facts, self.taxonomy, decision)
        label = checked.label
        # by elimination, the confidence is the model's own probability, not the 1.0 left
        # after every other label was excluded
        conf = probs[label] if checked.eliminated else checked.probs[label]
        probs = checked.probs
        # a session unlike the training sessions gets no confident label
        abstained = checked.abstain or conf < abstain_below or bool(odd) or p.before_point
        if contrib is not None:
            support, against = contribution_evidence(
                contrib(label), p.facts, min_share=self.settings.classify.evidence_min_share,
                session=p.session)
        else:
            support, against = definition_evidence(label, p.facts, self.taxonomy), []
        own = llm.proposed if llm.label == label else []  # the LLM argued for this label
        kept, dropped = verify(support + own, p.session, p.facts, p.earlier)
        kept = list({(e.fact, str(e.events)): e for e in kept}.values())  # once each
        against, dropped_against = verify(against, p.session, p.facts, p.earlier)
        near = p.neighbors or []
        voters = [Voter(session_id=sid, label=lab, similarity=round(sim, 4))
                  for (lab, sim), sid in zip(near, p.neighbor_ids) if lab == label]
        margin = None
        if llm.scores is not None and len(llm.scores) > 1:
            margin = llm.scores[label] - max(v for k, v in llm.scores.items() if k != label)
        threshold = decision[1] if decision else None
        text = sentence(label, conf, abstained, [e.text for e in kept],
                        [e.text for e in against], len(voters), len(near),
                        checked.moved_from, checked.reasons, threshold=threshold,
                        eliminated=checked.eliminated)
        warnings = p.warnings + ([checked.warning] if checked.warning else []) + (
            [f"outside what this model was fitted on: {'; '.join(odd[:4])}"] if odd else [])
        return PatternPrediction(
            session_id=p.session.session_id, label=label, probabilities=probs,
            confidence=conf, threshold=threshold, abstained=abstained, explanation=text,
            by_elimination=checked.eliminated, out_of_domain=bool(odd),
            evidence=kept, against=against, voters=voters[:5], llm_margin=margin,
            evidence_dropped=dropped + dropped_against,
            # the few-shot examples when the LLM was asked, else the nearest labelled sessions
            neighbors=llm.examples or [e.session_id for e in p.examples] or p.neighbor_ids,
            fallback_reason=llm.fallback,
            llm_scores=llm.scores, warnings=warnings,
            timings={"llm_s": round(llm.seconds, 4)}, **extra)
