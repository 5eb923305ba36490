"""The stack: a calibrated multinomial model over the heads' out-of-fold probabilities, with
the heads it combines chosen by cross-validation.

Every non-empty subset of heads is scored by 5-fold cross-validation on the stacking rows, by
the taxonomy's metric (log-loss, or for binary taxonomies the auPR / auROC of the positive
class). The best subset only wins over a smaller one if its per-fold advantage is larger than
one standard error of the paired fold differences (the "one-standard-error rule"): a head that
only adds noise is left out instead of diluting the ranking on a coin-flip of CV.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.array(["a", "b"] * 50)
    >>> good = np.where(y[:, None] == np.array(["a", "b"]), 0.8, 0.2)
    >>> noise = rng.dirichlet([1, 1], size=100)
    >>> st = Stack(["a", "b"]).fit({"good": good, "noise": noise}, y)
    >>> st.chosen
    ['good']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError
from behavior_rag.heads.linear import LinearHead

EPS = 1e-6
Metric = Literal["log_loss", "aupr", "auroc"]


class StackSummary(BaseModel):
    """What the stack chose: its heads, the metric and the CV loss of every subset tried."""

    parts: list[str]
    metric: str = Field(description="log_loss, or aupr/auroc (losses are then 1 - metric).")
    cv_loss: dict[str, float] = Field(description="Subset ('a+b') -> mean 5-fold CV loss.")


def stack_features(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The stack's input: log-probabilities of each head, side by side."""
    return np.hstack([np.log(np.clip(p, EPS, 1.0)) for p in parts])


class Stack:
    """Chooses heads by CV (one-SE rule) and calibrates them with a multinomial LR."""

    def __init__(self, classes: Sequence[str], metric: Metric = "log_loss",
                 positive: str | None = None, seed: int = 0, folds: int = 5) -> None:
        if metric != "log_loss" and positive is None:
            raise ConfigError(f"metric {metric!r} needs the positive class", field="metric")
        self.classes, self.metric, self.positive = list(classes), metric, positive
        self.seed, self.folds = seed, folds
        self.chosen: list[str] = []
        self.cv_loss: dict[str, float] = {}
        self.model: LinearHead | None = None
        self.oof: np.ndarray | None = None  # out-of-fold stacked probabilities, per row

    def _splits(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        import warnings

        from sklearn.model_selection import StratifiedKFold

        # A label with a single labelled session (a few labels from the queue) sits in one
        # fold's test part; the others still stratify. Only all-singletons cannot be split.
        k = min(self.folds, int(max(np.unique(y, return_counts=True)[1])))
        if k < 2:
            raise ConfigError("fitting the stack needs a label with at least two labelled "
                              "sessions", field="label")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            return list(StratifiedKFold(k, shuffle=True, random_state=self.seed).split(y, y))

    def _loss(self, y: np.ndarray, p: np.ndarray) -> float:
        from sklearn.metrics import average_precision_score, roc_auc_score

        if self.metric == "log_loss":  # columns are in self.classes order (not sorted)
            rows = np.arange(len(y)), [self.classes.index(v) for v in y]
            return float(-np.log(np.clip(p[rows], EPS, 1)).mean())
        rank = average_precision_score if self.metric == "aupr" else roc_auc_score
        return 1.0 - float(rank(y == self.positive, p[:, self.classes.index(self.positive)]))

    def _cv(self, x: np.ndarray, y: np.ndarray, folds) -> tuple[np.ndarray, np.ndarray]:
        losses, oof = [], np.zeros((len(y), len(self.classes)))
        for tr, te in folds:
            lr = LinearHead(self.classes, balanced=False, seed=self.seed).fit(x[tr], y[tr])
            oof[te] = lr.predict_proba(x[te])
            losses.append(self._loss(y[te], oof[te]))
        return np.array(losses), oof

    def fit(self, parts: Mapping[str, np.ndarray], y: Sequence[str]) -> Stack:
        names, y = list(parts), np.asarray(list(y))
        folds = self._splits(y)
        fold_loss, oof = {}, {}
        for k in range(1, len(names) + 1):
            for subset in combinations(names, k):
                x = stack_features([parts[n] for n in subset])
                fold_loss[subset], oof[subset] = self._cv(x, y, folds)
                self.cv_loss["+".join(subset)] = float(fold_loss[subset].mean())
        best = min(fold_loss, key=lambda s: fold_loss[s].mean())
        ok = []
        for subset, losses in fold_loss.items():
            d = losses - fold_loss[best]  # same folds: paired differences
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            if d.mean() <= se:
                ok.append(subset)
        # the fewest heads within one SE of the best; among equals, the lowest loss
        chosen = min(ok, key=lambda s: (len(s), fold_loss[s].mean()))
        self.chosen, self.oof = list(chosen), oof[chosen]
        self.model = LinearHead(self.classes, balanced=False, seed=self.seed).fit(
            stack_features([parts[n] for n in chosen]), y)
        return self

    def predict_proba(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.model is None:
            raise ConfigError("the stack is not fitted", field="model")
        return self.model.predict_proba(stack_features([parts[n] for n in self.chosen]))

    def summary(self) -> StackSummary:
        return StackSummary(parts=self.chosen, metric=self.metric, cv_loss=self.cv_loss)
