"""The classification step: embed + retrieve -> cheap heads -> stack -> (unsure?) LLM -> evidence.

With a fitted model (:mod:`behavior_rag.heads`, ``behavior-rag fit``) the facts, embedding and
kNN heads decide through the stack, and the LLM is asked only as ``classify.llm`` says (the
cascade: where the stacked confidence is below the threshold fitted on dev). Without one, the
kNN vote is fused with the LLM's label scores (:mod:`behavior_rag.fusion`).

Example:
    >>> clf = Classifier(index, embedder, llm, load_taxonomy())          # doctest: +SKIP
    >>> clf.classify(session).label                                     # doctest: +SKIP
    'cart_abandoner'
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from behavior_rag.embed.base import Embedder
from behavior_rag.errors import BehaviorRagError, ConfigError, LLMOutputError
from behavior_rag.evidence import (
    check_definitions,
    contribution_evidence,
    definition_evidence,
    verify,
)
from behavior_rag.facts import compute_facts
from behavior_rag.fusion import DevExample, FusionParams, fuse, knn_vote
from behavior_rag.guard import guard_session
from behavior_rag.heads.cascade import asks, combine
from behavior_rag.heads.model import HeadInputs, HeadOutputs
from behavior_rag.heads.store import FittedModel
from behavior_rag.history import UserHistory, history_facts
from behavior_rag.index.base import VectorIndex
from behavior_rag.index.build import encode
from behavior_rag.llm.base import ChatMessage, LLMBackend
from behavior_rag.phrases import sentence
from behavior_rag.prompts import PromptFile, load_prompt
from behavior_rag.render import render
from behavior_rag.retrieve import Example, balanced_examples, labelled_neighbors
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Evidence, PatternPrediction, Session, SessionFacts, Voter

Progress = Callable[[int, int], None]


class LLMEvidence(BaseModel):
    fact: str
    value: Any = None


class LLMResult(BaseModel):
    """The classifier's LLM step for one session.

    ``scores``: label -> log-probability (None: no LLM, or it failed: ``fallback`` says why);
    ``proposed``: evidence a generating model cited for its ``label`` (checked later like any
    other, and shown only when the final label is the one it argued for).
    """

    scores: dict[str, float] | None = None
    label: str | None = None
    proposed: list[Evidence] = []
    fallback: str | None = None
    seconds: float = 0.0
    asked: bool = False


class LLMDecision(BaseModel):
    """What a generating model must return (as JSON)."""

    label: str
    evidence: list[LLMEvidence] = []
    explanation: str = ""


@dataclass
class Prepared:
    """A session ready for the LLM: its text, facts, neighbours and prompt."""

    session: Session
    text: str
    facts: SessionFacts
    vector: np.ndarray
    neighbors: list[tuple[str, float]]
    neighbor_ids: list[str]
    examples: list[Example]
    messages: list[ChatMessage]
    warnings: list[str]
    earlier: list[Session] = field(default_factory=list)  # the user's, for history facts


class Classifier:
    """Few-shot classifier over a labelled index. ``llm=None`` classifies by kNN vote alone."""

    def __init__(self, index: VectorIndex, embedder: Embedder, llm: LLMBackend | None,
                 taxonomy: Taxonomy, *, settings: Settings | None = None,
                 fusion: FusionParams | None = None, prompt: PromptFile | None = None,
                 model: FittedModel | None = None, history: UserHistory | None = None) -> None:
        self.index, self.embedder, self.llm, self.taxonomy = index, embedder, llm, taxonomy
        self.model, self.history = model, history
        self.settings = settings or default_settings()
        self.fusion = fusion or FusionParams()
        self.prompt = prompt or load_prompt(self.settings.classify.prompt)
        self.labels = list(taxonomy.names)
        # Label names written into shopper data ("... answer deal_hunter") prime a small model
        # to copy them (measured: +1 to +5 nats on the named label). Our renderings never
        # contain label names, so any occurrence came from free text and is masked.
        words = sorted({w for n in self.labels for w in (n, n.replace("_", " "),
                                                          n.replace("_", "-"))}, key=len,
                       reverse=True)
        self._label_re = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)

    # ---- steps --------------------------------------------------------------------------
    def prepare(self, sessions: Sequence[Session], *, retrieve: bool = True,
                prompts: bool = True) -> list[Prepared]:
        """Render, embed (one batch), retrieve neighbours and build prompts.

        ``retrieve=False`` (only with ``k_examples=0``): prompts without the embedding and the
        index search, which a zero-shot prompt does not need (the fine-tune builds 1,000 such
        prompts); ``Prepared.neighbors`` is then empty. ``prompts=False``: no LLM prompt yet
        (:meth:`with_prompt` builds it for the sessions the LLM is asked about)."""
        cs = self.settings.classify
        if not retrieve and cs.k_examples:
            raise ConfigError("prompts with few-shot examples need retrieval",
                              field="k_examples", value=str(cs.k_examples))
        tz = self.settings.render.timezone
        warnings: list[list[str]] = []
        if cs.strip_instructions:
            guarded = [guard_session(s) for s in sessions]
            sessions = [g for g, _ in guarded]
            warnings = [[f"{n} instruction-like span(s) cut from free text"] if n else []
                        for _, n in guarded]
        else:
            warnings = [[] for _ in sessions]
        facts = [compute_facts(s, tz=tz) for s in sessions]  # once: both renders reuse them
        earlier: list[list[Session]] = [[] for _ in sessions]
        if self.history is not None and self.model is not None and self.model.heads.spec.history:
            earlier = [self.history.earlier(s) for s in sessions]
            prop = self.model.heads.propensity
            facts = [f.model_copy(update={"history": history_facts(s, e, prop)})
                     for s, f, e in zip(sessions, facts, earlier)]
        texts = [render(s, settings=self.settings, facts=f) for s, f in zip(sessions, facts)]
        vecs = self.embedder.embed(texts) if texts and retrieve else \
            np.zeros((len(texts), self.embedder.info.dim), dtype=np.float32)
        # the index's own vectors (hybrid: with the facts) find the neighbours; the text
        # vector stays the embedding head's input
        queries = encode(self.index, vecs, list(zip(sessions, facts))) if retrieve else vecs
        out = []
        for s, f, text, v, q, warn, past in zip(sessions, facts, texts, vecs, queries, warnings,
                                                earlier):
            hits = labelled_neighbors(self.index, q, max(cs.knn_k, cs.k_examples * 4),
                                      session_id=s.session_id, user_id=s.user_id) \
                if retrieve else []
            examples = [e.model_copy(update={"text": self._neutralise(e.text)}) for e in
                        balanced_examples(hits, cs.k_examples, cs.per_label_max,
                                          cs.example_max_chars)]
            near = hits[: cs.knn_k]
            p = Prepared(s, text, f, v, [(h.meta.label, h.score) for h in near],
                         [h.meta.session_id for h in near], examples, [], warn, past)
            out.append(self.with_prompt(p) if prompts else p)
        return out

    def with_prompt(self, p: Prepared) -> Prepared:
        """``p`` with its LLM prompt (the session in its shorter budget, label names masked)."""
        if p.messages:
            return p
        short = self._neutralise(render(p.session, settings=self.settings, facts=p.facts,
                                        max_tokens=self.settings.classify.query_max_tokens))
        return replace(p, messages=self.prompt.messages(taxonomy=self.taxonomy,
                                                        examples=p.examples,
                                                        session_text=short))

    def llm_scores(self, p: Prepared) -> LLMResult:
        """Label log-probs (score mode) or a structured decision (generate mode), timed."""
        t0 = time.perf_counter()
        res = self._call(p)
        return res.model_copy(update={"seconds": time.perf_counter() - t0,
                                      "asked": self.llm is not None})

    def _call(self, p: Prepared) -> LLMResult:
        if self.llm is None:
            return LLMResult()
        if self.settings.classify.mode == "score" and not self.llm.can_score:
            return LLMResult(fallback=f"LLM {self.llm.name!r} gives no per-option "
                                      "log-probabilities: set classify.mode=generate")
        try:
            if self.settings.classify.mode == "score":
                scores = self.llm.score_options(p.messages, self.labels,
                                                answer_prefix=self.prompt.answer_prefix)
                return LLMResult(scores=dict(zip(self.labels, scores)))
            decision = self.structured(p)
        except LLMOutputError as e:
            return LLMResult(fallback=f"LLM output invalid after {e.context.get('attempts')} "
                                      f"attempts: {e.message}")
        except BehaviorRagError as e:
            return LLMResult(fallback=f"LLM failed: {e.message}")
        # A generated label becomes a one-hot "score" so fusion treats both modes alike.
        return LLMResult(scores={k: (0.0 if k == decision.label else -20.0)
                                 for k in self.labels}, label=decision.label,
                         proposed=[Evidence(fact=x.fact, value=x.value)
                                   for x in decision.evidence])

    def structured(self, p: Prepared) -> LLMDecision:
        """Generate JSON, validate it, re-ask with the error (bounded)."""
        schema = LLMDecision.model_json_schema()
        schema["properties"]["label"]["enum"] = self.labels
        suffix = self.prompt.render("structured_suffix", taxonomy=self.taxonomy,
                                    fact_names=sorted(p.facts.as_dict()))
        msgs = [*p.messages, ChatMessage(role="user", content=suffix)]
        raw, error = "", ""
        for attempt in range(1, self.settings.classify.max_reasks + 2):  # noqa: B007
            raw = self.llm.generate(msgs, json_schema=schema, max_tokens=300)
            try:
                decision = LLMDecision.model_validate_json(_json_part(raw))
                if decision.label not in self.labels:
                    raise ValueError(f"label {decision.label!r} is not one of {self.labels}")
                return decision
            except (ValidationError, ValueError) as e:
                error = str(e).splitlines()[0] if isinstance(e, ValueError) else str(e)
                msgs = [*msgs, ChatMessage(role="assistant", content=raw),
                        ChatMessage(role="user", content=self.prompt.render("reask",
                                                                           error=error))]
        raise LLMOutputError(error, raw_output=raw[:2000], attempts=attempt)

    def _predict(self, p: Prepared, probs: dict[str, float], abstain_below: float,
                 llm: LLMResult, contrib: Callable[[str], dict[str, float]] | None = None,
                 decision: tuple[str, float] | None = None, **extra) -> PatternPrediction:
        """The label after its definition check (``decision``: the fitted threshold of a
        positive label), and evidence that points its way: ``contrib(label)`` (the facts
        head's contributions) or the label's definition."""
        checked = check_definitions(probs, p.facts, self.taxonomy, decision)
        label, probs = checked.label, checked.probs
        conf = probs[label]
        abstained = checked.abstain or conf < abstain_below
        if contrib is not None:
            support, against = contribution_evidence(
                contrib(label), p.facts, min_share=self.settings.classify.evidence_min_share)
        else:
            support, against = definition_evidence(label, p.facts, self.taxonomy), []
        own = llm.proposed if llm.label == label else []  # the LLM argued for this label
        kept, dropped = verify(support + own, p.session, p.facts, p.earlier)
        kept = list({(e.fact, str(e.events)): e for e in kept}.values())  # once each
        against, dropped_against = verify(against, p.session, p.facts, p.earlier)
        voters = [Voter(session_id=sid, label=lab, similarity=round(sim, 4))
                  for (lab, sim), sid in zip(p.neighbors, p.neighbor_ids) if lab == label]
        margin = None
        if llm.scores is not None and len(llm.scores) > 1:
            margin = llm.scores[label] - max(v for k, v in llm.scores.items() if k != label)
        text = sentence(label, conf, abstained, [e.text for e in kept],
                        [e.text for e in against], len(voters), len(p.neighbors),
                        checked.moved_from, checked.reasons,
                        threshold=decision[1] if decision else None)
        return PatternPrediction(
            session_id=p.session.session_id, label=label, probabilities=probs, confidence=conf,
            threshold=decision[1] if decision else None,
            abstained=abstained, explanation=text, evidence=kept, against=against,
            voters=voters[:5], llm_margin=margin, evidence_dropped=dropped + dropped_against,
            neighbors=[e.session_id for e in p.examples], fallback_reason=llm.fallback,
            llm_scores=llm.scores, warnings=p.warnings + ([checked.warning] if checked.warning
                                                          else []),
            timings={"llm_s": round(llm.seconds, 4)}, **extra)

    def decide(self, p: Prepared, llm: LLMResult | None = None) -> PatternPrediction:
        """Fuse the kNN vote with the LLM step's scores (None: kNN alone); check evidence."""
        llm = llm or LLMResult()
        knn = knn_vote(p.neighbors, self.labels, self.fusion)
        probs = fuse(llm.scores, knn, self.fusion)
        source = "knn" if llm.scores is None else ("fused" if self.fusion.w_llm < 1 else "llm")
        return self._predict(p, probs, self.fusion.abstain_below, llm, source=source,
                             knn_vote=knn, llm_asked=llm.asked,
                             decided_by=["knn"] + (["llm"] if llm.scores is not None else []))

    def heads(self, prepared: Sequence[Prepared], *, explain: bool = False) -> HeadOutputs:
        """The fitted model's per-head and stacked probabilities of prepared sessions
        (``explain``: with the facts head's contributions)."""
        rows = HeadInputs(sessions=[p.session for p in prepared],
                          vectors=np.array([p.vector for p in prepared]),
                          neighbors=[p.neighbors for p in prepared],
                          facts=[p.facts for p in prepared])
        return self.model.heads.predict(rows, explain=explain)

    def _ask(self, stacked: np.ndarray) -> np.ndarray:
        """Which sessions the LLM is asked for, by ``classify.llm``."""
        mode = self.settings.classify.llm
        if self.llm is None or mode == "never":
            return np.zeros(len(stacked), dtype=bool)
        if mode == "always" or self.model is None:
            return np.ones(len(stacked), dtype=bool)
        return asks(stacked, self.model.cascade)

    def _decide_batch(self, prepared: list[Prepared]) -> list[PatternPrediction]:
        if self.model is None:
            ask = self._ask(np.zeros((len(prepared), 1)))
            results = self._llm_where(prepared, ask)
            return [self.decide(p, r) for p, r in zip(prepared, results)]
        m, chosen = self.model, self.model.heads.stack.chosen
        out = self.heads(prepared, explain="facts" in chosen)
        ask = self._ask(out.stacked)
        results = self._llm_where(prepared, ask)
        preds = []
        for i, (p, r) in enumerate(zip(prepared, results)):
            row = out.stacked[i: i + 1]
            if r.scores is not None:
                row = combine(row, [r.scores], self.labels, m.cascade)
            heads = {h: dict(zip(self.labels, v[i].tolist())) for h, v in out.heads.items()}
            contrib = (lambda lab, i=i: out.fact_contributions(i, self.labels.index(lab))) \
                if out.contributions is not None else None
            preds.append(self._predict(
                p, dict(zip(self.labels, row[0].tolist())), m.heads.abstain_below, r, contrib,
                decision=m.heads.decision(),
                source="stack+llm" if r.scores is not None else "stack", llm_asked=r.asked,
                decided_by=chosen + (["llm"] if r.scores is not None else []),
                head_probabilities=heads, knn_vote=heads["knn"]))
        return preds

    # ---- public -------------------------------------------------------------------------
    def classify(self, session: Session) -> PatternPrediction:
        return self.classify_many([session])[0]

    def classify_many(self, sessions: Sequence[Session], *, progress: Progress | None = None,
                      batch: int = 32) -> list[PatternPrediction]:
        """Predictions in input order; embedding/retrieval batched, LLM calls per session
        (concurrent for remote backends that support it)."""
        out: list[PatternPrediction] = []
        for start in range(0, len(sessions), batch):
            t0 = time.perf_counter()
            prepared = self.prepare(sessions[start: start + batch], prompts=False)
            t_prep = time.perf_counter() - t0
            for pred in self._decide_batch(prepared):
                pred.timings = {"prepare_s": round(t_prep, 4), **pred.timings}
                out.append(pred)
            if progress:
                progress(len(out), len(sessions))
        return out

    def llm_many(self, prepared: list[Prepared]) -> list[LLMResult]:
        """:meth:`llm_scores` for each, in order (concurrently where the backend can)."""
        if self.llm is None:
            return [LLMResult() for _ in prepared]
        return self.llm.map_concurrent(self.llm_scores, [self.with_prompt(p) for p in prepared])

    def _llm_where(self, prepared: list[Prepared], ask: np.ndarray) -> list[LLMResult]:
        """LLM results for the asked sessions (prompts built only for them), empty others."""
        idx = [i for i, a in enumerate(ask) if a]
        got = dict(zip(idx, self.llm_many([prepared[i] for i in idx])))
        return [got.get(i, LLMResult()) for i in range(len(prepared))]

    def _neutralise(self, text: str) -> str:
        return self._label_re.sub("[label name removed]", text)

    def dev_examples(self, sessions: Sequence[Session]) -> list[DevExample]:
        """LLM scores and neighbours for labelled dev sessions (to fit fusion)."""
        prepared = self.prepare(sessions)
        return [DevExample(llm_scores=r.scores, neighbors=p.neighbors, label=p.session.label)
                for p, r in zip(prepared, self.llm_many(prepared)) if p.session.label]


def _json_part(raw: str) -> str:
    """The first {...} block of a reply (models like to wrap JSON in prose or fences)."""
    start, end = raw.find("{"), raw.rfind("}")
    if start == -1 or end <= start:
        return raw
    candidate = raw[start: end + 1]
    try:
        json.loads(candidate)
        return candidate
    except json.JSONDecodeError:
        return raw
