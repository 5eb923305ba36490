"""The decision threshold of a two-label taxonomy: where the positive label's probability
calls a session positive. ``BehaviorRAG.fit`` fits it on dev (so ``classify`` labels are the
ones the eval reports score), and the eval harness fits the baselines' the same way.

Example:
    >>> import numpy as np
    >>> best_threshold(np.array([0, 1, 0, 1]), np.array([0.2, 0.6, 0.4, 0.9]))
    0.6
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import precision_recall_curve


def best_threshold(y_true_bin: np.ndarray, proba_pos: np.ndarray, metric: str = "f1") -> float:
    """The threshold (one of the given probabilities) that maximises F1 of the positive class
    when rows with ``proba_pos >= threshold`` are called positive.

    Meant for validation data only; the test set is then scored at this threshold. Ties go to the
    highest such threshold (fewest positive calls). Without any positive row there is nothing to
    fit, so it warns and returns 0.5.

    Example:
        >>> best_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.35, 0.3, 0.8]))
        0.3
    """
    if metric != "f1":
        raise ValueError(f"unsupported metric {metric!r}; only 'f1' is implemented")
    y = np.asarray(y_true_bin).astype(int).ravel()
    p = np.asarray(proba_pos, dtype=float).ravel()
    if y.size != p.size:
        raise ValueError(f"{y.size} labels but {p.size} probabilities")
    if y.sum() == 0:
        warnings.warn("best_threshold: no positive rows, returning 0.5", stacklevel=2)
        return 0.5
    prec, rec, thr = precision_recall_curve(y, p)
    # The curve's last point (recall 0, precision 1) has no threshold.
    prec, rec = prec[:-1], rec[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(thr[best].max())
