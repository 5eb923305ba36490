"""The product rows of ``behavior-rag eval``: exactly what a user gets from ``BehaviorRAG``.

:class:`ProductRun` calls :meth:`BehaviorRAG.fit` on the task's training part (dev: its
validation part) with the settings a user would have (the task's taxonomy, the configured
LLM), then :meth:`BehaviorRAG.classify` with ``classify.llm`` = ``never`` / ``cascade`` /
``always``. Component rows (each head, the LLM's own label scores) are read from the same
predictions (``head_probabilities``, ``llm_scores``): nothing here classifies by itself.

Example:
    >>> run = ProductRun(settings, task, Path("indexes/eval/synth"), llm=None)  # doctest: +SKIP
    >>> run.fit().chosen                                                   # doctest: +SKIP
    ['facts', 'embed']
    >>> preds, seconds = run.classify(task.test, "never")                 # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from behavior_rag.api import BehaviorRAG, FitReport
from behavior_rag.evaluation.loaders import LoadedTask
from behavior_rag.labels.targets import load_target
from behavior_rag.llm.base import LLMBackend
from behavior_rag.settings import Settings
from behavior_rag.types import PatternPrediction, Session

Mode = Literal["never", "cascade", "always"]


def with_mode(settings: Settings, mode: Mode) -> Settings:
    return settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"llm": mode})})


class ProductRun:
    """``BehaviorRAG.fit`` once, then ``classify`` in any ``classify.llm`` mode."""

    def __init__(self, settings: Settings, task: LoadedTask, index_dir: Path,
                 llm: LLMBackend | None) -> None:
        self.settings, self.task, self.index_dir, self.llm = settings, task, index_dir, llm
        self.fit_seconds = 0.0

    def fit(self) -> FitReport:
        t = time.perf_counter()
        mode: Mode = "cascade" if self.llm is not None else "never"  # never: no LLM loaded
        rag = BehaviorRAG(with_mode(self.settings, mode), self.index_dir, fresh=True,
                          llm=self.llm)
        if self.task.history:  # what a shop has recorded: every user's past sessions
            rag.add_history(self.task.history)
        target = self.task.spec.target  # as `fit --target`: the model records it
        report = rag.fit(self.task.train, self.task.val,
                         target=load_target(target) if target else None)
        self.fit_seconds = time.perf_counter() - t
        return report

    def classify(self, sessions: Sequence[Session], mode: Mode,
                 llm: LLMBackend | None = None, heads: Sequence[str] = ()
                 ) -> tuple[list[PatternPrediction], float]:
        """Predictions and seconds per session (``llm`` overrides the run's, e.g. an adapter;
        ``heads``: run these heads too, for their rows)."""
        rag = BehaviorRAG(with_mode(self.settings, mode), self.index_dir,
                          llm=llm if llm is not None else self.llm)
        rag.classifier  # noqa: B018 - load index, model and LLM before the clock starts
        t = time.perf_counter()
        preds = rag.classify_many(list(sessions), heads=heads)
        return preds, (time.perf_counter() - t) / max(len(sessions), 1)


def proba(preds: Sequence[PatternPrediction], classes: Sequence[str],
          head: str | None = None) -> np.ndarray:
    """``[sessions, classes]`` probabilities of the predictions (or of one of their heads)."""
    return np.array([[(p.head_probabilities[head] if head else p.probabilities).get(c, 0.0)
                      for c in classes] for p in preds])


def llm_proba(preds: Sequence[PatternPrediction], classes: Sequence[str]) -> np.ndarray:
    """The LLM's own label probabilities (softmax of its scores; uniform where it gave none)."""
    rows = []
    for p in preds:
        if not p.llm_scores:
            rows.append(np.full(len(classes), 1 / len(classes)))
            continue
        x = np.array([p.llm_scores[c] for c in classes])
        e = np.exp(x - x.max())
        rows.append(e / e.sum())
    return np.array(rows)


def evidence_summary(preds: Sequence[PatternPrediction]) -> dict[str, float]:
    return {"sessions": len(preds), "evidence_kept": sum(len(p.evidence) for p in preds),
            "evidence_dropped": sum(p.evidence_dropped for p in preds),
            "abstain_rate": float(np.mean([p.abstained for p in preds])) if preds else 0.0,
            "llm_asked_rate": float(np.mean([p.llm_asked for p in preds])) if preds else 0.0}
