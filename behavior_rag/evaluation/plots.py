"""Evaluation figures: PR and ROC curves, reliability diagram, confusion matrix.

matplotlib is imported inside each function with the non-interactive ``Agg`` backend, so
importing this module costs nothing and plotting works on machines without a display. Every PNG
is written to a temporary file in the target folder and moved into place, so a reader never sees
half a figure.

Example:
    >>> import numpy as np
    >>> curves = {"gb": (np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.9, 0.4]))}
    >>> pr_roc_plot(curves, "pr.png", "roc.png")  # doctest: +SKIP
    ('pr.png', 'roc.png')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from behavior_rag.atomic import writing_file

Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # an optional extra: say how to get it rather than a bare failure
        raise ImportError("plots need matplotlib: pip install 'behavior_rag[eval]'") from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> str:
    plt = _pyplot()
    path = Path(path)
    try:
        with writing_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return str(path)


def pr_roc_plot(curves: Curves, path_pr: str | Path, path_roc: str | Path) -> tuple[str, str]:
    """Precision-recall and ROC curves of every method, one chart each.

    ``curves`` maps method name -> ``(y_true_bin, proba_pos)``. Legends give average precision
    (PR, with the base rate drawn as the no-skill line) and AUC (ROC).

    Example:
        >>> pr_roc_plot({"m": (y, p)}, "out/pr.png", "out/roc.png")  # doctest: +SKIP
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    plt = _pyplot()
    fig_pr, ax_pr = plt.subplots(figsize=(5.5, 4.5))
    fig_roc, ax_roc = plt.subplots(figsize=(5.5, 4.5))
    base = None
    for name, (y, p) in curves.items():
        y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
        base = float(y.mean()) if y.size else base
        prec, rec, _ = precision_recall_curve(y, p)
        ax_pr.step(rec, prec, where="post",
                   label=f"{name} (AP {average_precision_score(y, p):.3f})")
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, p)
            ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    if base is not None:
        ax_pr.axhline(base, color="grey", linestyle=":", label=f"base rate {base:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    for ax, (xl, yl, title) in ((ax_pr, ("recall", "precision", "Precision-recall")),
                                (ax_roc, ("false positive rate", "true positive rate", "ROC"))):
        ax.set(xlabel=xl, ylabel=yl, title=title, xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="best", fontsize=8)
    return _save(fig_pr, path_pr), _save(fig_roc, path_roc)


def reliability_plot(curves: Curves, path: str | Path, bins: int = 10) -> str:
    """Reliability diagram: per equal-width confidence bin, observed frequency vs mean confidence.

    ``curves`` maps name -> ``(outcome, confidence)``: 0/1 truth and positive-class probability,
    or "was correct" and top-label confidence (the pairs the ECE in ``metrics`` takes).

    Example:
        >>> reliability_plot({"m": (y, p)}, "out/reliability.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, (y, c) in curves.items():
        y, c = np.asarray(y, dtype=float).ravel(), np.asarray(c, dtype=float).ravel()
        # Same binning as expected_calibration_error, so the picture matches the number.
        idx = np.clip(np.floor(c * bins).astype(int), 0, bins - 1)
        n = np.bincount(idx, minlength=bins)
        keep = n > 0
        conf = np.bincount(idx, weights=c, minlength=bins)[keep] / n[keep]
        freq = np.bincount(idx, weights=y, minlength=bins)[keep] / n[keep]
        ax.plot(conf, freq, marker="o", label=name)
    ax.set(xlabel="mean confidence", ylabel="observed frequency", title="Reliability",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def confusion_plot(cm: np.ndarray, classes: Sequence[str], path: str | Path,
                   title: str = "Confusion matrix") -> str:
    """Heat map of counts, rows = true class, columns = predicted, each cell annotated.

    Example:
        >>> confusion_plot(np.array([[5, 1], [2, 7]]), ["a", "b"], "out/cm.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    cm = np.asarray(cm)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(classes), fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    hi = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            # Light text on dark cells so every count stays legible.
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if hi and cm[i, j] > hi / 2 else "black")
    return _save(fig, path)
