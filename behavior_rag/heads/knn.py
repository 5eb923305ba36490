"""The ``knn`` head: the similarity-weighted vote of a session's nearest labelled sessions.

Each neighbour ``(label, cosine)`` adds ``exp((cos - top)/T)`` to its label, every label starts
at ``smoothing``, and a per-label log-weight (``bias``) removes the label mix of the index (a
6 % minority class otherwise never wins a vote). Fitting searches ``T`` and how much of that
mix to divide out, by macro-F1 then log-loss on the training rows; the vote is out-of-fold by
construction (a session's own user never votes). Unfitted, it is the default model's head.

Example:
    >>> p = knn_vote([("a", 0.9), ("b", 0.8)], ["a", "b"], KnnParams())
    >>> max(p, key=p.get)
    'a'
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.heads.base import Folds, Head, HeadInputs

TEMPERATURES = (0.01, 0.03, 0.05, 0.1, 0.3)


class KnnParams(BaseModel):
    temperature: float = Field(0.05, gt=0)
    smoothing: float = Field(0.5, ge=0)
    bias: dict[str, float] = Field(default_factory=dict, description="Log-weight added per "
                                   "label to the vote (removes the index's label mix).")


def knn_vote(neighbors: Sequence[tuple[str, float]], labels: Sequence[str],
             params: KnnParams) -> dict[str, float]:
    """Similarity-weighted vote: each neighbour (label, cosine) adds exp(cos/T)."""
    w = dict.fromkeys(labels, params.smoothing)
    if neighbors:
        top = max(s for _, s in neighbors)
        for label, s in neighbors:
            if label in w:
                w[label] += math.exp((s - top) / params.temperature)
    if params.bias:
        w = {k: v * math.exp(params.bias.get(k, 0.0)) for k, v in w.items()}
    total = sum(w.values()) or 1.0
    return {k: v / total for k, v in w.items()}


def vote_matrix(neighbors: Sequence[Sequence[tuple[str, float]]], labels: Sequence[str],
                params: KnnParams) -> np.ndarray:
    return np.array([[v[c] for c in labels] for v in (knn_vote(n, labels, params)
                                                      for n in neighbors)]).reshape(
        len(neighbors), len(labels))


def fit_knn(neighbors: Sequence[Sequence[tuple[str, float]]], y: Sequence[str],
            labels: Sequence[str]) -> KnnParams:
    """The temperature and calibration power (0, ½, 1) with the best macro-F1 (log-loss breaks
    ties) on these rows."""
    from sklearn.metrics import f1_score

    labels, y = list(labels), list(y)
    gold = (np.arange(len(y)), [labels.index(v) for v in y])
    best, best_key = KnnParams(), (-1.0, -math.inf)
    for t, power in itertools.product(TEMPERATURES, (0.0, 0.5, 1.0)):
        mean = vote_matrix(neighbors, labels, KnnParams(temperature=t)).mean(0)
        bias = {k: -power * math.log(max(float(v), 1e-9)) for k, v in zip(labels, mean)} \
            if power else {}
        p = KnnParams(temperature=t, bias=bias)
        probs = vote_matrix(neighbors, labels, p)
        pred = np.asarray(labels)[probs.argmax(1)]
        f1 = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
        ll = float(np.log(np.clip(probs[gold], 1e-12, 1)).mean())
        if (f1, ll) > best_key:
            best, best_key = p, (f1, ll)
    return best


class KnnHead(Head):
    """The vote of labelled neighbours, its temperature and calibration fitted."""

    name = "knn"
    needs = frozenset({"neighbors"})

    def __init__(self, classes: Sequence[str], seed: int = 0,
                 knn: KnnParams | None = None) -> None:
        super().__init__(classes, seed)
        self.knn = knn or KnnParams()

    def fit(self, rows: HeadInputs, y: np.ndarray, folds: Folds) -> np.ndarray:
        # never the session's own user: the vote is out-of-fold as it is
        self.knn = fit_knn(rows.neighbors, y, self.classes)
        return self.predict_proba(rows)

    def predict_proba(self, rows: HeadInputs) -> np.ndarray:
        return vote_matrix(rows.neighbors, self.classes, self.knn)

    def params(self) -> dict[str, Any]:
        return {"knn": self.knn.model_dump(mode="json")}

    def save(self, folder: Path) -> list[str]:
        return []  # all in params

    @classmethod
    def load(cls, folder: Path, classes: Sequence[str], params: dict[str, Any]) -> KnnHead:
        return cls(classes, knn=KnnParams.model_validate(params["knn"]))
