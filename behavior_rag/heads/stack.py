"""The stack: a calibrated log-linear pool of the heads' out-of-fold probabilities
(:func:`fit_pool`), with the heads it combines chosen by cross-validation.

Every non-empty subset of heads is scored by 5-fold cross-validation on the stacking rows, by
the taxonomy's metric (log-loss, or for binary taxonomies the auPR / auROC of the positive
class). The fewest heads whose loss is within one standard error of the best subset's win
(the "one-standard-error rule", :func:`within_one_se`): a head that only adds noise is left
out instead of diluting the ranking on a coin-flip of CV, and a subset much worse on average
is not kept because one fold happened to favour it. With a few labels per class (see
:func:`hedging`) the most heads within one SE are kept instead: CV cannot rank them yet.

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
HEDGE_ROWS = 20  # stacking rows per label below which the stack keeps every head it can
Metric = Literal["log_loss", "aupr", "auroc"]


class StackSummary(BaseModel):
    """What the stack chose: its heads, the metric and the CV loss of every subset tried."""

    parts: list[str]
    metric: str = Field(description="log_loss, or aupr/auroc (losses are then 1 - metric).")
    cv_loss: dict[str, float] = Field(description="Subset ('a+b') -> mean 5-fold CV loss.")


def stack_features(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The stack's input: log-probabilities of each head, side by side."""
    return np.hstack([np.log(np.clip(p, EPS, 1.0)) for p in parts])


def fit_pool(x: np.ndarray, y: Sequence[str], classes: Sequence[str], l2: float = 1e-3
             ) -> LinearHead:
    """The stack's calibrator: a log-linear opinion pool of the heads in ``x`` (their
    log-probabilities side by side, :func:`stack_features`), ``log p_k = sum_h w_h log
    p_hk + b_k`` up to normalisation, with one weight ``w_h >= 0`` per head and one bias per
    label, fitted by log-loss (L-BFGS-B). Returned as the equivalent :class:`LinearHead`.

    Why not a free multinomial regression on those columns: it has labels² weights per head
    (overfits a few dozen labels) and signs of its own, so it can turn a head round (seen on
    rows that repeat sessions, where a head's out-of-fold ranking was below chance). A pool
    can only trust a head more or less, never reverse it.

    Example:
        >>> y = np.array(["a", "b"] * 20)
        >>> good = np.where(y[:, None] == np.array(["a", "b"]), 0.7, 0.3)
        >>> lr = fit_pool(stack_features([good]), y, ["a", "b"])
        >>> bool(lr.coef[0, 0] > 0), lr.predict_proba(stack_features([good[:1]])).round(1).tolist()
        (True, [[1.0, 0.0]])
    """
    from scipy.optimize import minimize

    classes = list(classes)
    k = len(classes)
    logp = np.asarray(x, dtype=float).reshape(len(x), -1, k)  # [rows, heads, labels]
    h = logp.shape[1]
    onehot = np.asarray(list(y))[:, None] == np.asarray(classes)[None, :]
    present = onehot.any(0)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:h], theta[h:]
        z = np.einsum("nhk,h->nk", logp, w) + b
        z -= z.max(1, keepdims=True)
        logq = z - np.log(np.exp(z).sum(1, keepdims=True))
        g = (np.exp(logq) - onehot) / len(z)  # d loss / d z
        value = -(logq * onehot).sum() / len(z) + l2 * (b @ b + w @ w)
        return value, np.concatenate([np.einsum("nk,nhk->h", g, logp) + 2 * l2 * w,
                                      g.sum(0) + 2 * l2 * b])

    bounds = [(0.0, None)] * h + [(None, None) if p else (-30.0, -30.0) for p in present]
    start = np.concatenate([np.ones(h), np.where(present, 0.0, -30.0)])
    theta = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    coef = np.zeros((k, h * k))
    for j in range(h):
        coef[np.arange(k), j * k + np.arange(k)] = theta[j]
    return LinearHead.from_arrays(classes, coef, theta[h:])


def within_one_se(losses: np.ndarray, best: np.ndarray) -> bool:
    """Whether a subset with fold ``losses`` is as good as the best one (fold losses
    ``best``): not worse on the same folds by more than one standard error of the paired
    differences, and its mean within one standard error of the best's (the classic rule).
    Both, because a fold's outlier inflates the paired error and a subset much worse on
    average then passed the first alone (seen with a few dozen labels).

    Example:
        >>> best = np.array([0.70, 0.75, 0.72, 0.74, 0.71])
        >>> close, outlier = best + [0.01, -0.01, 0.02, 0, -0.005], best + [0, 0, 0, 0, 1.2]
        >>> bool(within_one_se(close, best)), bool(within_one_se(outlier, best))
        (True, False)
    """
    d = losses - best  # same folds: paired differences
    if len(d) < 2:
        return bool(d.mean() <= 0)
    se_paired = d.std(ddof=1) / np.sqrt(len(d))
    se_best = best.std(ddof=1) / np.sqrt(len(best))
    return bool(d.mean() <= min(se_paired, se_best))


def hedging(rows: int, labels: int) -> bool:
    """Whether the stack hedges: with fewer than :data:`HEDGE_ROWS` stacking rows per label,
    it keeps the *largest* subset of heads within one SE of the best instead of the smallest.

    Why: with a few labels per class every subset is within one SE, and the fewest-heads rule
    then bets on the single head with the luckiest CV loss — often the most timid one, not the
    best (16 random labels on synthetic personas: the embedding head alone chosen, macro-F1
    0.24, where the forest alone gave 0.54). The pool's weights (>= 0) hedge across the heads
    instead. With more labels CV can tell heads apart and the fewest heads classify faster.

    Example:
        >>> hedging(64, 8), hedging(2_000, 2)
        (True, False)
    """
    return rows < HEDGE_ROWS * labels


class Stack:
    """Chooses heads by CV (one-SE rule) and pools them (:func:`fit_pool`)."""

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
            oof[te] = fit_pool(x[tr], y[tr], self.classes).predict_proba(x[te])
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
        ok = [s for s, losses in fold_loss.items() if within_one_se(losses, fold_loss[best])]
        mean = {s: float(fold_loss[s].mean()) for s in ok}
        if hedging(len(y), len(self.classes)):  # the most heads: CV cannot tell them apart
            chosen = max(ok, key=lambda s: (len(s), -mean[s]))
        else:  # the fewest heads within one SE of the best; among equals, the lowest loss
            chosen = min(ok, key=lambda s: (len(s), mean[s]))
        self.chosen, self.oof = list(chosen), oof[chosen]
        self.model = fit_pool(stack_features([parts[n] for n in chosen]), y, self.classes)
        return self

    def weights(self) -> dict[str, float]:
        """Each chosen head's weight in the pool: how much a unit of its log-odds moves the
        stacked log-odds (1.0 each for a stack that is not a pool, e.g. one saved before)."""
        if self.model is None:
            return {}
        k, coef = len(self.classes), self.model.coef
        w = {h: float(coef[0, j * k]) for j, h in enumerate(self.chosen)}
        pool = np.zeros_like(coef)
        for j, h in enumerate(self.chosen):
            pool[np.arange(k), j * k + np.arange(k)] = w[h]
        return w if np.allclose(pool, coef) else dict.fromkeys(self.chosen, 1.0)

    def predict_proba(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.model is None:
            raise ConfigError("the stack is not fitted", field="model")
        return self.model.predict_proba(stack_features([parts[n] for n in self.chosen]))

    def summary(self) -> StackSummary:
        return StackSummary(parts=self.chosen, metric=self.metric, cv_loss=self.cv_loss)
