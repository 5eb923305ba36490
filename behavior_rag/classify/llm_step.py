"""The classifier's LLM step: a few-shot prompt of the nearest labelled sessions, then either
each label's log-probability (score mode) or a structured decision (generate mode).

Label names written into shopper data ("... answer deal_hunter") prime a small model to copy
them (measured: +1 to +5 nats on the named label). Our renderings never contain label names,
so any occurrence came from free text and is masked before it reaches a prompt.

Example:
    >>> step = LLMStep(llm, taxonomy, settings)                          # doctest: +SKIP
    >>> step.many(featurizer, prepared)[0].scores                         # doctest: +SKIP
    {'deal_hunter': -0.4, ...}
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

from pydantic import BaseModel

from behavior_rag.classify.featurizer import Featurizer, Prepared
from behavior_rag.errors import BehaviorRagError, ConfigError, LLMOutputError
from behavior_rag.llm.base import ChatMessage, LLMBackend
from behavior_rag.llm.structured import ask
from behavior_rag.prompts import PromptFile, load_prompt
from behavior_rag.render import render
from behavior_rag.retrieve import balanced_examples
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Evidence


class LLMEvidence(BaseModel):
    fact: str
    value: Any = None


class LLMResult(BaseModel):
    """The LLM step for one session.

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
    examples: list[str] = []  # session ids of the few-shot examples in its prompt


class LLMDecision(BaseModel):
    """What a generating model must return (as JSON)."""

    label: str
    evidence: list[LLMEvidence] = []
    explanation: str = ""


class LLMStep:
    """Prompts and calls for one LLM backend (``llm=None``: never asked)."""

    def __init__(self, llm: LLMBackend | None, taxonomy: Taxonomy, settings: Settings,
                 prompt: PromptFile | None = None) -> None:
        self.llm, self.taxonomy, self.settings = llm, taxonomy, settings
        self.prompt = prompt or load_prompt(settings.classify.prompt)
        self.labels = list(taxonomy.names)
        words = sorted({w for n in self.labels for w in (n, n.replace("_", " "),
                                                          n.replace("_", "-"))}, key=len,
                       reverse=True)
        self._label_re = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)

    def neutralise(self, text: str) -> str:
        return self._label_re.sub("[label name removed]", text)

    def with_prompt(self, p: Prepared) -> Prepared:
        """``p`` with its LLM prompt (the session in its shorter budget, label names masked,
        few-shot examples from its neighbours: search first when ``k_examples`` > 0)."""
        if p.messages:
            return p
        cs = self.settings.classify
        if cs.k_examples and p.neighbors is None:
            raise ConfigError("prompts with few-shot examples need retrieval",
                              field="k_examples", value=str(cs.k_examples))
        examples = [e.model_copy(update={"text": self.neutralise(e.text)}) for e in
                    balanced_examples(p.hits, cs.k_examples, cs.per_label_max,
                                      cs.example_max_chars)]
        short = self.neutralise(render(p.session, settings=self.settings, facts=p.facts,
                                       max_tokens=cs.query_max_tokens))
        return replace(p, examples=examples, messages=self.prompt.messages(
            taxonomy=self.taxonomy, examples=examples, session_text=short))

    def prompts(self, featurizer: Featurizer, prepared: list[Prepared]) -> list[Prepared]:
        """Prompts for these sessions (searching neighbours first where examples need them)."""
        if self.settings.classify.k_examples:
            prepared = featurizer.search(prepared)
        return [self.with_prompt(p) for p in prepared]

    def scores(self, p: Prepared) -> LLMResult:
        """Label log-probs (score mode) or a structured decision (generate mode), timed."""
        t0 = time.perf_counter()
        res = self._call(p)
        return res.model_copy(update={"seconds": time.perf_counter() - t0,
                                      "asked": self.llm is not None,
                                      "examples": [e.session_id for e in p.examples]})

    def many(self, featurizer: Featurizer, prepared: list[Prepared]) -> list[LLMResult]:
        """:meth:`scores` for each, in order (concurrently where the backend can)."""
        if self.llm is None:
            return [LLMResult() for _ in prepared]
        return self.llm.map_concurrent(self.scores, self.prompts(featurizer, prepared))

    def where(self, featurizer: Featurizer, prepared: list[Prepared], ask_mask
              ) -> list[LLMResult]:
        """Results for the asked sessions (prompts built only for them), empty others."""
        idx = [i for i, a in enumerate(ask_mask) if a]
        got = dict(zip(idx, self.many(featurizer, [prepared[i] for i in idx])))
        return [got.get(i, LLMResult()) for i in range(len(prepared))]

    def _call(self, p: Prepared) -> LLMResult:
        if self.llm is None:
            return LLMResult()
        mode = self.settings.classify.mode
        if mode == "score" and not self.llm.can_score:
            return LLMResult(fallback=f"LLM {self.llm.name!r} gives no per-option "
                                      "log-probabilities: set classify.mode=generate")
        try:
            if mode == "score":
                scores = self.llm.score_options(p.messages, self.labels,
                                                answer_prefix=self.prompt.answer_prefix)
                return LLMResult(scores=dict(zip(self.labels, scores)))
            decision = self.structured(p)
        except LLMOutputError as e:
            return LLMResult(fallback=f"LLM output invalid after {e.context.get('attempts')} "
                                      f"attempts: {e.message}")
        except BehaviorRagError as e:
            return LLMResult(fallback=f"LLM failed: {e.message}")
        # A generated label becomes a one-hot "score" so both modes combine alike.
        return LLMResult(scores={k: (0.0 if k == decision.label else -20.0)
                                 for k in self.labels}, label=decision.label,
                         proposed=[Evidence(fact=x.fact, value=x.value)
                                   for x in decision.evidence])

    def structured(self, p: Prepared) -> LLMDecision:
        """The decision as JSON, validated, re-asked with the error (bounded)."""
        schema = LLMDecision.model_json_schema()
        schema["properties"]["label"]["enum"] = self.labels
        suffix = self.prompt.render("structured_suffix", taxonomy=self.taxonomy,
                                    fact_names=sorted(p.facts.as_dict()))

        def known(d: LLMDecision) -> None:
            if d.label not in self.labels:
                raise ValueError(f"label {d.label!r} is not one of {self.labels}")

        return ask(self.llm, [*p.messages, ChatMessage(role="user", content=suffix)],
                   LLMDecision, schema=schema, check=known,
                   reask=lambda error: self.prompt.render("reask", error=error),
                   max_reasks=self.settings.classify.max_reasks)
