"""The cascade: ask the LLM only for sessions the stack is unsure of, and only if it helps.

On dev sessions the LLM was asked for, :func:`fit_cascade` fits how to combine its label
scores with the stack (a weight and a temperature on calibrated LLM probabilities, in log
space) and the stacked confidence below which to ask it. A threshold of 0 means never: the
LLM did not improve the dev metric by at least ``min_gain`` within the budget of ``max_rate``
of the sessions, or its improvement of the gold label's log-loss on the sessions it was asked
about was not at least two standard errors (a searched grid would otherwise find a "gain" in
noise).

Example:
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.55, 0.45]])
    >>> params = CascadeParams(threshold=0.6, w_llm=0.5)
    >>> asks(p, params).tolist()
    [False, True]
    >>> combine(p[1:], [{"a": -5.0, "b": -0.1}], ["a", "b"], params).argmax(1).tolist()
    [1]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

EPS = 1e-9


class CascadeParams(BaseModel):
    """When to ask the LLM and how much its answer counts."""

    threshold: float = Field(0.0, ge=0, le=1.0 + 1e-6, description="Ask the LLM when the "
                             "stacked confidence is below this (0: never).")
    w_llm: float = Field(0.0, ge=0, le=1, description="Weight of the LLM's log-probabilities.")
    llm_temperature: float = Field(1.0, gt=0)
    llm_bias: dict[str, float] = Field(default_factory=dict, description="Per-label shift "
                                       "removing the label preference the LLM shows on "
                                       "every session (contextual calibration).")
    dev_sessions: int = 0
    dev_llm_rate: float = Field(0.0, description="Share of dev sessions the LLM was asked for.")
    dev_gain: float = Field(0.0, description="Dev metric gain over the stack alone.")


def asks(stacked: np.ndarray, params: CascadeParams) -> np.ndarray:
    """Which rows the cascade sends to the LLM."""
    return stacked.max(1) < params.threshold


def _llm_logp(scores: Sequence[dict[str, float]], classes: Sequence[str],
              params: CascadeParams) -> np.ndarray:
    x = np.array([[s[c] + params.llm_bias.get(c, 0.0) for c in classes] for s in scores])
    x = x / params.llm_temperature
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)


def combine(stacked: np.ndarray, scores: Sequence[dict[str, float]], classes: Sequence[str],
            params: CascadeParams) -> np.ndarray:
    """The stack's probabilities moved by the LLM's label scores (rows in the same order)."""
    z = (1 - params.w_llm) * np.log(np.clip(stacked, EPS, 1)) + \
        params.w_llm * _llm_logp(scores, classes, params)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _gold_logp(p: np.ndarray, y: np.ndarray, classes: list[str]) -> np.ndarray:
    return np.log(np.clip(p[np.arange(len(y)), [classes.index(v) for v in y]], EPS, 1))


def _robust(d: np.ndarray) -> bool:
    """Per-row log-loss improvements: mean at least two standard errors above zero."""
    return len(d) > 1 and d.mean() > 2 * d.std(ddof=1) / np.sqrt(len(d))


def _score(y: np.ndarray, p: np.ndarray, classes: list[str], positive: str | None) -> float:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    if positive is not None and 0 < (y == positive).sum() < len(y):
        col = p[:, classes.index(positive)]
        return float(average_precision_score(y == positive, col) + roc_auc_score(
            y == positive, col)) / 2
    return float(f1_score(y, np.asarray(classes)[p.argmax(1)], labels=classes,
                          average="macro", zero_division=0))


GRID = [(w, t) for w in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0) for t in (0.5, 1.0, 2.0, 4.0)]


def _best_mix(stacked: np.ndarray, got: list[dict[str, float]], y: np.ndarray,
              classes: list[str], bias: dict[str, float]) -> CascadeParams:
    """The (weight, temperature) with the highest gold-label log-likelihood on these rows."""
    def loglik(w: float, t: float) -> float:
        params = CascadeParams(w_llm=w, llm_temperature=t, llm_bias=bias)
        return float(_gold_logp(combine(stacked, got, classes, params), y, classes).sum())

    w, t = max(GRID, key=lambda wt: loglik(*wt))
    return CascadeParams(w_llm=w, llm_temperature=t, llm_bias=bias)


def _out_of_sample_gain(stacked: np.ndarray, got: list[dict[str, float]], y: np.ndarray,
                        classes: list[str], bias: dict[str, float]) -> np.ndarray:
    """Per-row gold log-likelihood gain of combining, each half scored with the mix fitted on
    the other half (so the grid search cannot find a gain in noise)."""
    halves = [np.arange(len(y))[i::2] for i in (0, 1)]
    gain = np.zeros(len(y))
    for fit_on, score_on in (halves, halves[::-1]):
        params = _best_mix(stacked[fit_on], [got[i] for i in fit_on], y[fit_on], classes, bias)
        moved = combine(stacked[score_on], [got[i] for i in score_on], classes, params)
        gain[score_on] = _gold_logp(moved, y[score_on], classes) - \
            _gold_logp(stacked[score_on], y[score_on], classes)
    return gain


def fit_cascade(stacked: np.ndarray, scores: Sequence[dict[str, float] | None],
                y: Sequence[str], classes: Sequence[str], *, positive: str | None = None,
                max_rate: float = 0.2, min_gain: float = 0.005) -> CascadeParams:
    """Fit the combination and the threshold on dev rows; ``scores[i]`` is None where the
    LLM was not asked (or failed). Rows are all dev rows, so rates are over all of them."""
    classes, y = list(classes), np.asarray(list(y))
    asked = np.array([s is not None for s in scores])
    never = CascadeParams(dev_sessions=len(y))
    if asked.sum() < 4:
        return never
    got = [s for s in scores if s is not None]
    m = np.array([[s[c] for c in classes] for s in got])
    m = m - m.mean(axis=1, keepdims=True)
    bias = {c: -float(v) for c, v in zip(classes, m.mean(axis=0))}
    if not _robust(_out_of_sample_gain(stacked[asked], got, y[asked], classes, bias)):
        return never  # the LLM's scores do not help on the sessions the stack is unsure of
    params = _best_mix(stacked[asked], got, y[asked], classes, bias)
    moved = stacked.copy()
    moved[asked] = combine(stacked[asked], got, classes, params)
    base = _score(y, stacked, classes, positive)
    conf, best, best_key = stacked.max(1), never, (base + min_gain, 0.0)
    for cut in sorted({float(c) + 1e-9 for c in conf[asked]}):
        use = asked & (conf < cut)
        rate = float(use.mean())
        if rate > max_rate:
            break
        key = (_score(y, np.where(use[:, None], moved, stacked), classes, positive), -rate)
        if key >= best_key:
            best_key = key
            best = params.model_copy(update={"threshold": min(cut, 1.0),
                                             "dev_sessions": len(y), "dev_llm_rate": rate,
                                             "dev_gain": key[0] - base})
    return best
