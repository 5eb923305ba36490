"""Fit the classifier users call: heads and stack on labelled sessions, then the LLM cascade.

The training sessions must already be in the index as labelled (their neighbours vote); the
dev sessions are only read. Steps: compute what the asked-for heads read (facts; vectors and
neighbours only for heads that read them), fit :class:`~behavior_rag.heads.model.HeadsModel`,
then, when an LLM is configured and ``classify.llm`` is not ``never``, ask it about the least
confident dev sessions (at most ``classify.cascade_dev_max``) and fit when to ask it and how
much its answer counts (:func:`~behavior_rag.heads.cascade.fit_cascade`). Returns a new
model; nothing already fitted is changed.

Example:
    >>> model = fit_model(classifier, train, dev)                          # doctest: +SKIP
    >>> model.heads.chosen, model.cascade.threshold                        # doctest: +SKIP
    (['facts', 'knn'], 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel

from behavior_rag.classify import Classifier
from behavior_rag.classify.featurizer import head_inputs
from behavior_rag.heads.base import HeadInputs
from behavior_rag.heads.cascade import CascadeParams, fit_cascade
from behavior_rag.heads.model import FitStats, HeadsModel
from behavior_rag.heads.registry import head_class
from behavior_rag.heads.store import FittedModel
from behavior_rag.history import UserHistory
from behavior_rag.index.storage import IndexConfig
from behavior_rag.labels.targets import Target
from behavior_rag.llm.adapter import data_hash
from behavior_rag.types import Session
from behavior_rag.vectors import HybridSpec

Progress = Callable[[str], None]


class IndexInfo(BaseModel):
    """What :meth:`BehaviorRAG.info` says about an index folder."""

    path: str
    config: IndexConfig
    labels: dict[str, int]
    users: int


class FitReport(BaseModel):
    """What :meth:`BehaviorRAG.fit` fitted and measured on dev."""

    path: str
    chosen: list[str]
    metric: str
    cv_loss: dict[str, float]
    dev: FitStats
    cascade: CascadeParams
    hybrid: HybridSpec | None = None


def rows_for(clf: Classifier, sessions: Sequence[Session], needs: set[str],
             batch: int = 256) -> HeadInputs:
    """What the heads read of ``sessions`` (no prompts)."""
    prepared = [p for start in range(0, len(sessions), batch)
                for p in clf.featurizer.prepare(sessions[start: start + batch], needs)]
    return head_inputs(prepared)


def fit_model(clf: Classifier, train: Sequence[Session], dev: Sequence[Session], *,
              history: UserHistory | None = None, heads: Sequence[str] | None = None,
              target: Target | None = None, progress: Progress | None = None) -> FittedModel:
    """Heads + stack on ``train`` (already indexed as labelled) and ``dev``; then the cascade.
    ``clf``: a classifier over the index without a model (its featurizer reads no history;
    ``history`` is given to the heads here)."""
    say = progress or (lambda _: None)
    tax, cs = clf.taxonomy, clf.settings.classify
    heads = list(heads or cs.heads)
    needs = {n for h in heads for n in head_class(h).needs}
    say("computing what the heads read" + (" (embedding, retrieving)" if needs - {"facts",
                                                                                "events"}
                                          else ""))
    rows_train, rows_dev = rows_for(clf, list(train), needs), rows_for(clf, list(dev), needs)
    say(f"fitting heads ({', '.join(heads)}) and stack")
    fitted, stats = HeadsModel.fit(rows_train, rows_dev, clf.labels, heads=heads,
                                   metric=tax.metric, positive=tax.positive,
                                   abstain_cost=cs.abstain_cost, history=history)
    cascade = CascadeParams()
    if clf.llm is not None and cs.llm != "never" and cs.cascade_dev_max:
        say("asking the LLM about the least confident dev sessions")
        cascade = _fit_cascade(clf, fitted, list(dev))
    return FittedModel(heads=fitted, cascade=cascade, target=target, taxonomy=tax,
                       embedder=clf.embedder.info,
                       data_hash=data_hash(list(train)), dev=stats)


def _fit_cascade(clf: Classifier, heads: HeadsModel, dev: list[Session]) -> CascadeParams:
    # the stack's out-of-fold probabilities of the dev rows: what it would say on new sessions
    stacked = heads.stack.oof[-len(dev):]
    cs = clf.settings.classify
    unsure = np.argsort(stacked.max(1))[: cs.cascade_dev_max]
    prepared = clf.featurizer.prepare([dev[i] for i in unsure], {"facts"})
    scores: list[dict[str, float] | None] = [None] * len(dev)
    for i, r in zip(unsure, clf.llm_many(prepared)):
        scores[i] = r.scores
    return fit_cascade(stacked, scores, [s.label for s in dev], clf.labels,
                       positive=clf.taxonomy.positive, max_rate=cs.cascade_max_rate)
