"""Fit the classifier users call: heads and stack on labelled sessions, then the LLM cascade.

The training sessions must already be in the index as labelled (their neighbours vote); the
dev sessions are only read. Steps: embed + retrieve both parts (the embedding cache makes the
training part nearly free), fit :class:`~behavior_rag.heads.model.HeadsModel`, then, when an
LLM is configured and ``classify.llm`` is not ``never``, ask it about the least confident dev
sessions (at most ``classify.cascade_dev_max``) and fit when to ask it and how much its answer
counts (:func:`~behavior_rag.heads.cascade.fit_cascade`).

Example:
    >>> model = fit_model(classifier, train, dev)                          # doctest: +SKIP
    >>> model.heads.stack.chosen, model.cascade.threshold                  # doctest: +SKIP
    (['facts', 'knn'], 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from behavior_rag.classify import Classifier
from behavior_rag.heads.cascade import CascadeParams, fit_cascade
from behavior_rag.heads.model import HeadInputs, HeadsModel
from behavior_rag.heads.store import FittedModel
from behavior_rag.llm.adapter import data_hash
from behavior_rag.types import Session

Progress = Callable[[str], None]


def head_inputs(clf: Classifier, sessions: Sequence[Session], batch: int = 256) -> HeadInputs:
    """Vectors and labelled neighbours of ``sessions`` (no prompts)."""
    prepared = [p for start in range(0, len(sessions), batch)
                for p in clf.prepare(sessions[start: start + batch], prompts=False)]
    return HeadInputs(sessions=[p.session for p in prepared],
                      vectors=np.array([p.vector for p in prepared]),
                      neighbors=[p.neighbors for p in prepared],
                      facts=[p.facts for p in prepared])


def fit_model(clf: Classifier, train: Sequence[Session], dev: Sequence[Session], *,
              progress: Progress | None = None) -> FittedModel:
    """Heads + stack on ``train`` (already indexed as labelled) and ``dev``; then the cascade."""
    say = progress or (lambda _: None)
    tax, cs = clf.taxonomy, clf.settings.classify
    say("embedding and retrieving")
    rows_train, rows_dev = head_inputs(clf, list(train)), head_inputs(clf, list(dev))
    say("fitting heads and stack")
    heads, stats = HeadsModel.fit(rows_train, rows_dev, clf.labels, metric=tax.metric,
                                  positive=tax.positive, abstain_cost=cs.abstain_cost,
                                  history=clf.history)
    model = FittedModel(heads=heads, taxonomy=tax, embedder=clf.embedder.info,
                        data_hash=data_hash(list(train)), dev=stats)
    if clf.llm is not None and cs.llm != "never" and cs.cascade_dev_max:
        say("asking the LLM about the least confident dev sessions")
        model.cascade = _fit_cascade(clf, heads, rows_dev)
    return model


def _fit_cascade(clf: Classifier, heads: HeadsModel, dev: HeadInputs) -> CascadeParams:
    # the stack's out-of-fold probabilities of the dev rows: what it would say on new sessions
    stacked = heads.stack.oof[-len(dev.sessions):]
    cs = clf.settings.classify
    unsure = np.argsort(stacked.max(1))[: cs.cascade_dev_max]
    prepared = clf.prepare([dev.sessions[i] for i in unsure], prompts=False)
    scores: list[dict[str, float] | None] = [None] * len(dev.sessions)
    for i, r in zip(unsure, clf.llm_many(prepared)):
        scores[i] = r.scores
    return fit_cascade(stacked, scores, dev.labels, clf.labels,
                       positive=clf.taxonomy.positive, max_rate=cs.cascade_max_rate)
