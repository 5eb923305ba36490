"""The classification step: featurizer → model → decider, called in that order, once each.

* :class:`~.featurizer.Featurizer` computes what the model's chosen heads and the asked-for
  output read, nothing more (a facts-only model renders, embeds and searches nothing unless
  similar-session voters are asked for);
* the model (:class:`~behavior_rag.heads.store.FittedModel`, or the default model of an
  index nobody fitted: the kNN vote) gives probabilities; it is immutable, and
  :meth:`Classifier.with_model` makes a classifier for a new one;
* :class:`~.decider.Decider` asks the LLM where the cascade says (:mod:`.llm_step`), checks
  the label definitions and adds evidence.

:meth:`Classifier.classify_many` goes batch by batch, each batch in that order; a batch's heads
may run in a worker thread while the next batch is prepared (:mod:`.ahead`), and the
cyclic garbage collector waits until the call ends (:mod:`.gc_pause`).

Example:
    >>> clf = Classifier(index, embedder, llm, load_taxonomy(), model=fitted)  # doctest: +SKIP
    >>> clf.classify(session).label                                     # doctest: +SKIP
    'cart_abandoner'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from behavior_rag.classify.ahead import ahead
from behavior_rag.classify.decider import DEFAULT_CASCADE, Decider
from behavior_rag.classify.featurizer import Featurizer, FeaturizerStats, Prepared
from behavior_rag.classify.gc_pause import paused_gc
from behavior_rag.classify.llm_step import LLMDecision, LLMResult, LLMStep
from behavior_rag.embed.base import Embedder
from behavior_rag.heads.model import HeadsModel
from behavior_rag.heads.store import FittedModel
from behavior_rag.history import UserHistory
from behavior_rag.index.base import VectorIndex
from behavior_rag.llm.base import LLMBackend
from behavior_rag.prompts import PromptFile
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session

__all__ = ["Classifier", "Featurizer", "FeaturizerStats", "LLMDecision", "LLMResult",
           "Prepared"]

Progress = Callable[[int, int], None]


class Classifier:
    """Classifier over a labelled index: ``model`` (None: the default kNN model), ``llm``
    (None: never asked), ``history``: the users' sessions (read only by a model fitted with
    history facts)."""

    def __init__(self, index: VectorIndex, embedder: Embedder, llm: LLMBackend | None,
                 taxonomy: Taxonomy, *, settings: Settings | None = None,
                 prompt: PromptFile | None = None, model: FittedModel | None = None,
                 history: UserHistory | None = None) -> None:
        self.settings = settings or default_settings()
        self.taxonomy, self._model = taxonomy, model
        self.labels = list(taxonomy.names)
        self._heads = model.heads if model is not None else HeadsModel.default(self.labels)
        self._cascade = model.cascade if model is not None else DEFAULT_CASCADE
        reads_history = model is not None and model.heads.history
        self.history = history if reads_history else None
        self.featurizer = Featurizer(index, embedder, self.settings, history=self.history,
                                     propensity=self._heads.propensity,
                                     target=model.target if model is not None else None)
        self.step = LLMStep(llm, taxonomy, self.settings, prompt)
        self.decider = Decider(taxonomy, self.settings)

    @property
    def model(self) -> FittedModel | None:
        """The fitted model (None: the default kNN model); immutable."""
        return self._model

    @property
    def llm(self) -> LLMBackend | None:
        return self.step.llm

    @property
    def prompt(self) -> PromptFile:
        return self.step.prompt

    @property
    def index(self) -> VectorIndex:
        return self.featurizer.index

    @property
    def embedder(self) -> Embedder:
        return self.featurizer.embedder

    def with_model(self, model: FittedModel | None, history: UserHistory | None = None
                   ) -> Classifier:
        """A classifier like this one for ``model`` (the facade swaps it in after ``fit``)."""
        return Classifier(self.index, self.embedder, self.llm, self.taxonomy,
                          settings=self.settings, prompt=self.prompt, model=model,
                          history=history)

    def needs(self, *, voters: bool = False, heads: Sequence[str] = ()) -> set[str]:
        """What the featurizer computes for a decision: the chosen (and ``heads``) heads'
        inputs, plus neighbours when similar-session ``voters`` are asked for."""
        out = self._heads.needs([*self._heads.chosen, *heads])
        return out | {"neighbors"} if voters else out

    # ---- public -------------------------------------------------------------------------
    def classify(self, session: Session, *, voters: bool = False) -> PatternPrediction:
        return self.classify_many([session], voters=voters)[0]

    def classify_many(self, sessions: Sequence[Session], *, progress: Progress | None = None,
                      batch: int = 256, voters: bool = False, heads: Sequence[str] = ()
                      ) -> list[PatternPrediction]:
        """Predictions in input order. ``voters``: find similar labelled sessions even when
        no chosen head reads them; ``heads``: run these heads too (their probabilities in
        ``head_probabilities``, e.g. for the eval's component rows)."""
        needs = self.needs(voters=voters, heads=heads)
        chunks = [sessions[i: i + batch] for i in range(0, len(sessions), batch)]
        out: list[PatternPrediction] = []
        # a batch's heads run while the next batch is prepared (see ahead, gc_pause)
        with paused_gc(), ahead(len(chunks)) as pool:
            waiting: tuple | None = None
            for chunk in [*chunks, None]:
                job = None
                if chunk is not None:
                    t0 = time.perf_counter()
                    prepared = self.featurizer.prepare(chunk, needs)
                    job = (prepared, time.perf_counter() - t0,
                           pool.submit(self.decider.score, prepared, self._heads, heads))
                if waiting is not None:
                    out += self._decide(*waiting, heads)
                    if progress:
                        progress(len(out), len(sessions))
                waiting = job
        return out

    def _decide(self, prepared: list[Prepared], t_prep: float, scored: Future,
                heads: Sequence[str]) -> list[PatternPrediction]:
        preds = self.decider.decide(prepared, self._heads, self._cascade, self.step,
                                    self.featurizer, extra_heads=heads, scored=scored.result())
        for pred in preds:
            pred.timings = {"prepare_s": round(t_prep, 4), **pred.timings}
        return preds

    def prepare(self, sessions: Sequence[Session], *, retrieve: bool = True,
                prompts: bool = True) -> list[Prepared]:
        """Sessions with vectors and neighbours (``retrieve``) and LLM prompts (``prompts``),
        for fitting and fine-tuning."""
        needs = {"facts", "vector", "neighbors"} if retrieve else {"facts"}
        prepared = self.featurizer.prepare(sessions, needs)
        return [self.step.with_prompt(p) for p in prepared] if prompts else prepared

    def llm_many(self, prepared: list[Prepared]) -> list[LLMResult]:
        """The LLM step for each prepared session, in order."""
        return self.step.many(self.featurizer, prepared)
