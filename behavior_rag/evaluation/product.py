"""The product's own methods for the evaluation harness: kNN vote, few-shot LLM, fused.

They share one labelled FAISS index over the training sessions and compute each session's
neighbours and LLM label scores once (the expensive part), so the methods differ only in how
they decide — as in production, where fusion parameters are fitted on labelled validation
data (never the test part) and stored with the index.

``Stacked`` adds a calibrated tabular score: a logistic regression fitted on the *validation*
part over the fused probabilities and any baseline's probabilities (e.g. gradient boosting on
session facts — a signal the product can explain from facts).

Example:
    >>> shared = ProductScores(settings, taxonomy, llm=None)                 # doctest: +SKIP
    >>> shared.fit(train_sessions, val_sessions)                              # doctest: +SKIP
    >>> shared.proba("knn", test_sessions, classes)                           # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.classify import Classifier, LLMResult
from behavior_rag.embed import get_embedder
from behavior_rag.fusion import DevExample, FusionParams, fit, fuse, knn_vote
from behavior_rag.index.build import upsert_sessions
from behavior_rag.index.factory import create_index
from behavior_rag.llm.base import LLMBackend
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session

EPS = 1e-6


class StackSummary(BaseModel):
    """What the stacker chose: its parts, the metric and the CV loss of every subset tried."""

    parts: list[str]
    metric: str = Field(description="log_loss, or aupr/auroc (losses are then 1 - metric).")
    cv_loss: dict[str, float] = Field(description="Subset ('a+b') -> mean 5-fold CV loss.")


class ProductScores:
    """Neighbours + LLM scores per session (computed once), fusion fitted on validation."""

    def __init__(self, settings: Settings, taxonomy: Taxonomy, llm: LLMBackend | None,
                 embedder=None) -> None:
        self.settings, self.taxonomy, self.llm = settings, taxonomy, llm
        self.embedder = embedder or get_embedder(settings)
        self.labels = list(taxonomy.names)
        self._cache: dict[tuple[str, bool], tuple[DevExample, float]] = {}
        self.params: dict[str, FusionParams] = {}
        self.clf = None
        self.seconds: dict[str, float] = {"index": 0.0}

    def fit(self, train: Sequence[Session], val: Sequence[Session],
            llm_val: Sequence[Session] | None = None) -> None:
        """Index ``train`` (labelled) and fit kNN / LLM / fused parameters on validation.

        ``llm_val`` (default ``val``) limits the LLM's validation sessions (LLM calls are the
        slow part); kNN parameters always use the whole validation part.
        """
        t = time.perf_counter()
        index = create_index(self.embedder.info, self.settings.index)
        upsert_sessions(index, self.embedder, list(train), settings=self.settings, split="train")
        self.seconds["index"] = time.perf_counter() - t
        self.clf = Classifier(index, self.embedder, self.llm, self.taxonomy,
                              settings=self.settings)
        knn_dev = self.examples(val, with_llm=False)
        self.params["knn"] = fit(knn_dev, self.labels, weights=[0.0])
        if self.llm is not None:
            dev = self.examples(llm_val if llm_val is not None else val, with_llm=True)
            self.params["llm"] = fit(dev, self.labels, weights=[1.0])
            self.params["fused"] = fit(dev, self.labels)

    def examples(self, sessions: Sequence[Session], with_llm: bool) -> list[DevExample]:
        """Neighbours (and LLM scores) per session, cached by session id."""
        todo = [s for s in sessions if (s.session_id, with_llm) not in self._cache]
        for start in range(0, len(todo), 64):
            chunk = todo[start: start + 64]
            t = time.perf_counter()
            prepared = self.clf.prepare(chunk)
            t_prep = (time.perf_counter() - t) / max(len(chunk), 1)
            for p in prepared:
                t = time.perf_counter()
                scores = self.clf.llm_scores(p).scores if with_llm else None
                self._cache[(p.session.session_id, with_llm)] = (
                    DevExample(llm_scores=scores, neighbors=p.neighbors, label=p.session.label),
                    t_prep + time.perf_counter() - t)
        return [self._cache[(s.session_id, with_llm)][0] for s in sessions]

    def seconds_per_session(self, sessions: Sequence[Session], with_llm: bool) -> float:
        got = [self._cache[(s.session_id, with_llm)][1] for s in sessions]
        return float(np.mean(got)) if got else float("nan")

    def proba(self, method: str, sessions: Sequence[Session], classes: Sequence[str]
              ) -> np.ndarray:
        """Probabilities of ``method`` ("knn", "llm", "fused") in ``classes`` order."""
        p = self.params[method]
        exs = self.examples(sessions, with_llm=method != "knn")
        rows = []
        for d in exs:
            probs = fuse(d.llm_scores if method != "knn" else None,
                         knn_vote(d.neighbors, self.labels, p), p)
            rows.append([probs.get(c, 0.0) for c in classes])
        return np.array(rows)

    def predictions(self, sessions: Sequence[Session]) -> list[PatternPrediction]:
        """Full predictions (evidence, abstention) with the fused parameters (kNN if no LLM)."""
        method = "fused" if "fused" in self.params else "knn"
        self.clf.fusion = self.params[method]
        with_llm = method == "fused"
        prepared = self.clf.prepare(sessions)
        out = []
        for p in prepared:
            d = self._cache.get((p.session.session_id, with_llm))
            scores = d[0].llm_scores if d else (self.clf.llm_scores(p).scores if with_llm else None)
            out.append(self.clf.decide(p, LLMResult(scores=scores)))
        return out


class Stacked:
    """Logistic regression over log-probabilities of several fitted methods.

    The methods it combines are chosen too: every non-empty subset is scored by 5-fold
    cross-validation on the stacking rows (never test rows), by the metric the task is judged
    on (``metric``: log-loss, or for binary tasks the auPR / auROC of the positive class). The
    best subset only wins over a smaller one if its per-fold advantage is larger than one
    standard error of the paired fold differences (the "one-standard-error rule"): a part that
    only adds noise (e.g. the kNN vote next to a strong tabular model) is left out instead of
    diluting the ranking on a coin-flip of cross-validation.

    Example:
        >>> st = Stacked().fit([p_knn, p_gbm], y_val, names=["knn", "gbm"])  # doctest: +SKIP
        >>> st.chosen_names  # doctest: +SKIP
        ['gbm']
    """

    def __init__(self, name: str = "stacked") -> None:
        self.name = name
        self.model = None
        self.chosen: list[int] = []
        self.chosen_names: list[str] = []
        self.metric = "log_loss"
        self.cv_loss: dict[str, float] = {}  # per subset; for auPR/auROC: 1 - metric

    @staticmethod
    def _features(parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.hstack([np.log(np.clip(p, EPS, 1.0)) for p in parts])

    def fit(self, val_parts: Sequence[np.ndarray], y_val: Sequence[str], seed: int = 0,
            names: Sequence[str] | None = None,
            metric: Literal["log_loss", "aupr", "auroc"] = "log_loss",
            positive: str | None = None) -> Stacked:
        from itertools import combinations

        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        if metric != "log_loss" and positive is None:
            raise ValueError(f"metric {metric!r} needs the positive class")
        names = list(names) if names is not None else [str(i) for i in range(len(val_parts))]
        y = np.asarray(list(y_val))
        self.metric = metric
        folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(y, y))
        rank = {"aupr": average_precision_score, "auroc": roc_auc_score}.get(metric)

        def fold_losses(x: np.ndarray) -> np.ndarray:
            out = []
            for tr, te in folds:
                lr = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x[tr], y[tr])
                p = lr.predict_proba(x[te])
                if rank is None:
                    out.append(log_loss(y[te], p, labels=lr.classes_))
                else:
                    out.append(1.0 - rank(y[te] == positive,
                                          p[:, list(lr.classes_).index(positive)]))
            return np.array(out)

        fold_loss: dict[tuple[int, ...], np.ndarray] = {}
        for k in range(1, len(val_parts) + 1):
            for subset in combinations(range(len(val_parts)), k):
                fold_loss[subset] = fold_losses(self._features([val_parts[i] for i in subset]))
                self.cv_loss["+".join(names[i] for i in subset)] = float(
                    fold_loss[subset].mean())
        best = min(fold_loss, key=lambda s: fold_loss[s].mean())
        ok = []
        for subset, losses in fold_loss.items():
            d = losses - fold_loss[best]  # same folds: paired differences
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            if d.mean() <= se:
                ok.append(subset)
        # smallest subset within one SE of the best; among equals, the lowest loss
        self.chosen = list(min(ok, key=lambda s: (len(s), fold_loss[s].mean())))
        self.chosen_names = [names[i] for i in self.chosen]
        self.model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        self.model.fit(self._features([val_parts[i] for i in self.chosen]), y)
        return self

    def summary(self) -> StackSummary:
        return StackSummary(parts=self.chosen_names, metric=self.metric, cv_loss=self.cv_loss)

    def predict_proba(self, parts: Sequence[np.ndarray], classes: Sequence[str]) -> np.ndarray:
        got = self.model.predict_proba(self._features([parts[i] for i in self.chosen]))
        known = list(self.model.classes_)
        # A class absent from validation gets probability 0 (the stacker never saw it).
        return np.stack([got[:, known.index(c)] if c in known else np.zeros(len(got))
                         for c in classes], axis=1)
