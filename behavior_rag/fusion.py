"""Fuse the LLM's label log-probabilities with the kNN vote of labelled neighbours.

``p(label) ∝ p_llm(label)^w · p_knn(label)^(1-w)`` where ``p_llm = softmax((logprob + bias)/T)``
(the bias removes a label's prior in the prompt — contextual calibration — and T sharpens or
flattens) and ``p_knn`` is a similarity-weighted vote with add-α smoothing. ``w``, ``T``, the
biases and the kNN temperature are fitted on a labelled dev split (never on test) and saved as
JSON with the index. Below ``abstain_below`` a prediction abstains.

Example:
    >>> params = FusionParams(w_llm=0.5)
    >>> p = fuse({"a": -1.0, "b": -3.0}, knn_vote([("a", 0.9), ("b", 0.8)], ["a", "b"], params),
    ...          params)
    >>> max(p, key=p.get)
    'a'
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from sklearn.metrics import f1_score, log_loss

from behavior_rag.atomic import replace_file
from behavior_rag.errors import ConfigError


class FusionParams(BaseModel):
    w_llm: float = Field(0.5, ge=0, le=1, description="Weight of the LLM (0: kNN only).")
    llm_temperature: float = Field(1.0, gt=0)
    llm_bias: dict[str, float] = Field(default_factory=dict)
    knn_temperature: float = Field(0.05, gt=0)
    knn_smoothing: float = Field(0.5, ge=0)
    knn_bias: dict[str, float] = Field(default_factory=dict, description="Log-weight added per "
                                       "label to the vote: removes the label mix of the index "
                                       "(a 6 % minority class otherwise never wins a vote).")
    abstain_below: float = Field(0.0, ge=0, le=1)
    fitted_on: int = 0
    dev_macro_f1: float | None = None

    def save(self, path: str | Path) -> None:
        replace_file(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: str | Path) -> FusionParams:
        return cls.model_validate_json(Path(path).read_text())


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def knn_vote(neighbors: Sequence[tuple[str, float]], labels: Sequence[str],
             params: FusionParams) -> dict[str, float]:
    """Similarity-weighted vote: each neighbour (label, cosine) adds exp(cos/T)."""
    w = dict.fromkeys(labels, params.knn_smoothing)
    if neighbors:
        top = max(s for _, s in neighbors)
        for label, s in neighbors:
            if label in w:
                w[label] += math.exp((s - top) / params.knn_temperature)
    if params.knn_bias:
        w = {k: v * math.exp(params.knn_bias.get(k, 0.0)) for k, v in w.items()}
    total = sum(w.values()) or 1.0
    return {k: v / total for k, v in w.items()}


def llm_probs(scores: dict[str, float], params: FusionParams) -> dict[str, float]:
    labels = list(scores)
    x = np.array([scores[k] + params.llm_bias.get(k, 0.0) for k in labels])
    return dict(zip(labels, _softmax(x / params.llm_temperature).tolist()))


def fuse(llm_scores: dict[str, float] | None, knn: dict[str, float],
         params: FusionParams) -> dict[str, float]:
    """Fused probabilities (kNN only when the LLM gave nothing)."""
    labels = list(knn)
    if llm_scores is None or params.w_llm == 0:
        return dict(knn)
    pl = llm_probs(llm_scores, params)
    logp = np.array([params.w_llm * math.log(max(pl.get(k, 0.0), 1e-12))
                     + (1 - params.w_llm) * math.log(max(knn[k], 1e-12)) for k in labels])
    return dict(zip(labels, _softmax(logp).tolist()))


class DevExample(BaseModel):
    """What fitting needs per labelled dev session."""

    llm_scores: dict[str, float] | None
    neighbors: list[tuple[str, float]]
    label: str


KNN_TEMPS = (0.01, 0.03, 0.05, 0.1, 0.3)


def fit(dev: Sequence[DevExample], labels: Sequence[str], base: FusionParams | None = None,
        weights: Sequence[float] | None = None) -> FusionParams:
    """Grid-search w, T, the kNN temperature and kNN calibration for dev macro-F1 (log-loss
    breaks ties).

    ``weights`` restricts the LLM weights tried (``[0]``: kNN alone, ``[1]``: LLM alone).
    """
    if not dev:
        raise ConfigError("fusion needs labelled dev examples to fit", field="dev")
    base = base or FusionParams()
    labels = list(labels)
    ordered = sorted(labels)  # sklearn's log_loss reads probability columns in sorted order
    y = [d.label for d in dev]
    with_llm = [d.llm_scores for d in dev if d.llm_scores]
    bias: dict[str, float] = {}
    if with_llm:
        # Contextual calibration: subtract each label's mean (centred) score over dev sessions,
        # so a label the model likes regardless of the session gains nothing from that.
        m = np.array([[s[k] for k in labels] for s in with_llm])
        m = m - m.mean(axis=1, keepdims=True)
        bias = {k: -float(v) for k, v in zip(labels, m.mean(axis=0))}
    best, best_key = base, (-1.0, -math.inf)
    ws = list(weights) if weights is not None else \
        [0.0] + ([0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0] if with_llm else [])
    # kNN calibration, like the LLM's: the vote's mean over dev sessions is the label mix the
    # index imposes; dividing it out (power 1), halfway (0.5) or not at all (0) is searched.
    kbias: dict[float, dict[str, float]] = {}
    for kt in KNN_TEMPS:
        p0 = base.model_copy(update={"knn_temperature": kt, "knn_bias": {}})
        mean = np.mean([[knn_vote(d.neighbors, labels, p0)[k] for k in labels] for d in dev], 0)
        kbias[kt] = {k: -float(math.log(max(v, 1e-9))) for k, v in zip(labels, mean)}
    for w, t, kt, power in itertools.product(ws, (0.5, 1.0, 2.0, 4.0), KNN_TEMPS,
                                             (0.0, 0.5, 1.0)):
        if w == 0 and t != 1.0:
            continue
        if w == 1 and (kt != KNN_TEMPS[0] or power != 0.0):
            continue  # the kNN side is ignored at w = 1
        p = base.model_copy(update={
            "w_llm": w, "llm_temperature": t, "llm_bias": bias, "knn_temperature": kt,
            "knn_bias": {k: power * v for k, v in kbias[kt].items()} if power else {}})
        probs = [fuse(d.llm_scores, knn_vote(d.neighbors, labels, p), p) for d in dev]
        pred = [max(q, key=q.get) for q in probs]
        f1 = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
        ll = -log_loss(y, [[q[k] for k in ordered] for q in probs], labels=ordered)
        if (f1, ll) > best_key:
            best, best_key = p, (f1, ll)
    return best.model_copy(update={"fitted_on": len(dev), "dev_macro_f1": best_key[0]})
