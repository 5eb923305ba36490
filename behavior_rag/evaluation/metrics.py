"""Classification metrics for the evaluation harness: scikit-learn for the standard scores, numpy
for expected calibration error, and a validation-fitted decision threshold.

Every function takes string labels as the rest of the project does, and reports ``n`` and
``abstain_rate`` so a table row says how many sessions it rests on and how often the method
declined. Abstained rows are *not* removed: their prediction still counts, so a method cannot
improve its scores by abstaining on hard cases.

Example:
    >>> import numpy as np
    >>> m = binary_metrics(["b", "n", "b", "n"], np.array([0.9, 0.2, 0.6, 0.4]), positive="b")
    >>> m["accuracy"], m["auroc"], m["n"]
    (1.0, 1.0, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from behavior_rag.heads.threshold import best_threshold  # noqa: F401 - the harness's name


def expected_calibration_error(correct_or_y: np.ndarray, conf: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width bins of ``conf`` in [0, 1].

    ``correct_or_y`` is 0/1: the true outcome when ``conf`` is a positive-class probability, or
    "prediction was right" when ``conf`` is the top-label confidence. Bin ``k`` holds
    ``k/bins <= conf < (k+1)/bins`` (the last bin includes 1.0); ECE is the row-weighted mean of
    ``|mean(outcome) - mean(conf)|`` over non-empty bins.

    Example:
        >>> expected_calibration_error(np.array([1, 1, 0, 0]), np.array([0.9, 0.9, 0.9, 0.9]))
        0.4
    """
    y = np.asarray(correct_or_y, dtype=float).ravel()
    c = np.asarray(conf, dtype=float).ravel()
    if y.shape != c.shape:
        raise ValueError(f"correct_or_y has {y.size} rows but conf has {c.size}")
    if y.size == 0:
        return float("nan")
    # floor(conf * bins) puts 1.0 in its own bin; clip folds it into the last one.
    idx = np.clip(np.floor(c * bins).astype(int), 0, bins - 1)
    n = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=bins)
                 - np.bincount(idx, weights=c, minlength=bins))
    # Sum of |sum(y) - sum(conf)| per bin / N equals sum (n_b / N) * |mean gap| for non-empty bins.
    return round(float(gap[n > 0].sum() / y.size), 12)


def _abstain_rate(abstained: np.ndarray | None, n: int) -> float:
    if abstained is None:
        return 0.0
    a = np.asarray(abstained, dtype=bool).ravel()
    if a.size != n:
        raise ValueError(f"abstained has {a.size} rows but there are {n} labels")
    return float(a.mean()) if n else 0.0


def binary_metrics(y_true: Sequence[str], proba_pos: np.ndarray, positive: str,
                   threshold: float = 0.5, abstained: np.ndarray | None = None) -> dict:
    """Scores for a two-class task from the positive-class probability.

    A row is predicted positive when ``proba_pos >= threshold`` (fit the threshold on validation
    data with :func:`best_threshold`, never on the rows scored here). auROC and auPR are NaN when
    ``y_true`` has a single class, since they are undefined there.

    Example:
        >>> m = binary_metrics(["y", "n", "n"], np.array([0.8, 0.3, 0.6]), positive="y")
        >>> m["f1_pos"], m["base_rate"]
        (0.6666666666666666, 0.3333333333333333)
    """
    y = (np.asarray(list(y_true), dtype=object) == positive).astype(int)
    p = np.asarray(proba_pos, dtype=float).ravel()
    if y.size != p.size:
        raise ValueError(f"{y.size} labels but {p.size} probabilities")
    pred = (p >= threshold).astype(int)
    both = 0 < y.sum() < y.size
    return {
        "n": int(y.size),
        "base_rate": float(y.mean()) if y.size else float("nan"),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)),
        "f1_pos": float(f1_score(y, pred, pos_label=1, zero_division=0)),
        "auroc": float(roc_auc_score(y, p)) if both else float("nan"),
        "aupr": float(average_precision_score(y, p)) if y.sum() > 0 else float("nan"),
        "ece": expected_calibration_error(y, p),
        "abstain_rate": _abstain_rate(abstained, int(y.size)),
    }


def bootstrap_intervals(y_true: Sequence[str], proba_pos: np.ndarray, positive: str,
                        n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """95 % bootstrap intervals (percentile, sessions resampled with ``seed``) of auROC and auPR:
    ``auroc_lo``, ``auroc_hi``, ``aupr_lo``, ``aupr_hi``; empty when one class is missing.
    Each resample is scored from counts over the tied-score groups of the full data (the same
    values scikit-learn gives, at a fraction of the cost).

    Example:
        >>> ci = bootstrap_intervals(["y", "n"] * 20, np.tile([0.9, 0.1], 20), "y", n_boot=50)
        >>> ci["auroc_lo"], ci["auroc_hi"]
        (1.0, 1.0)
    """
    y = (np.asarray(list(y_true), dtype=object) == positive).astype(float)
    p = np.asarray(proba_pos, dtype=float).ravel()
    n = y.size
    if not 0 < y.sum() < n:
        return {}
    order = np.argsort(-p, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(p[order]) != 0])  # tied-score groups
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # resamples at a time: bounded memory
    auroc, aupr = [], []
    for done in range(0, n_boot, chunk):
        k = min(chunk, n_boot - done)
        flat = (rng.integers(0, n, (k, n)) + np.arange(k)[:, None] * n).ravel()
        w = np.bincount(flat, minlength=k * n).reshape(k, n)[:, order]
        a, b = _resample_scores(np.add.reduceat(w * y[order], starts, axis=1),
                                np.add.reduceat(w * (1 - y[order]), starts, axis=1))
        auroc.append(a)
        aupr.append(b)
    out: dict[str, float] = {}
    if not sum(len(a) for a in auroc):  # every resample held one class only
        return out
    for k, v in (("auroc", auroc), ("aupr", aupr)):
        lo, hi = np.percentile(np.concatenate(v), [2.5, 97.5])
        out |= {f"{k}_lo": float(lo), f"{k}_hi": float(hi)}
    return out


def _resample_scores(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """auROC and auPR of resamples from their positives ``tp`` and negatives ``fp`` per
    tied-score group (columns from the highest score down); resamples of one class drop out."""
    pos, neg = tp.sum(1), fp.sum(1)
    ok = (pos > 0) & (neg > 0)
    tp, fp, pos, neg = tp[ok], fp[ok], pos[ok], neg[ok]
    ctp, cfp = tp.cumsum(1), fp.cumsum(1)
    auroc = (tp * (neg[:, None] - cfp) + 0.5 * tp * fp).sum(1) / (pos * neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(ctp + cfp > 0, ctp / (ctp + cfp), 0.0)
    return auroc, (tp / pos[:, None] * precision).sum(1)


def multiclass_metrics(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str],
                       abstained: np.ndarray | None = None) -> dict:
    """Accuracy, macro-F1 over ``classes`` and top-label ECE; ``proba`` columns follow ``classes``.

    Example:
        >>> m = multiclass_metrics(["a", "b", "c"], np.eye(3), ["a", "b", "c"])
        >>> m["accuracy"], m["macro_f1"], m["ece"]
        (1.0, 1.0, 0.0)
    """
    classes = list(classes)
    y = np.asarray(list(y_true), dtype=object)
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape != (y.size, len(classes)):
        raise ValueError(f"proba has shape {p.shape}, expected ({y.size}, {len(classes)})")
    pred = np.asarray(classes, dtype=object)[p.argmax(axis=1)] if y.size else y
    return {
        "n": int(y.size),
        "accuracy": float(accuracy_score(y, pred)) if y.size else float("nan"),
        "macro_f1": float(f1_score(y, pred, labels=classes, average="macro", zero_division=0)),
        "ece": expected_calibration_error(pred == y, p.max(axis=1) if y.size else p[:, :0]),
        "abstain_rate": _abstain_rate(abstained, int(y.size)),
    }


def confusion(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Counts, rows = true class, columns = predicted, both in ``classes`` order.

    Example:
        >>> confusion(["a", "b", "b"], ["a", "a", "b"], ["a", "b"]).tolist()
        [[1, 0], [1, 1]]
    """
    return confusion_matrix(list(y_true), list(y_pred), labels=list(classes))
