"""Linear models saved as plain arrays: the embedding head and the stack's calibrator.

scikit-learn fits them; prediction is a softmax (or a sigmoid for two classes) over ``X @ W.T
+ b`` in numpy, so a saved model is two ``.npy`` arrays read with ``allow_pickle=False``.

Example:
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 10)
    >>> lr = LinearHead(["a", "b"]).fit(X, ["a", "b"] * 10)
    >>> int(lr.predict_proba(np.array([[1.0, 0.0]])).argmax()), LinearHead.from_arrays(
    ...     ["a", "b"], *lr.arrays()).predict_proba(X[:2]).round(3).tolist() == \\
    ...     lr.predict_proba(X[:2]).round(3).tolist()
    (0, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from behavior_rag.errors import ConfigError, StoreError
from behavior_rag.heads.base import Folds, Head, HeadInputs


class LinearHead:
    """Multinomial logistic regression; a class absent from the training rows gets 0."""

    def __init__(self, classes: Sequence[str], C: float = 1.0, balanced: bool = True,
                 seed: int = 0) -> None:
        self.classes, self.C, self.balanced, self.seed = list(classes), C, balanced, seed
        self.coef: np.ndarray | None = None  # [classes, features]
        self.intercept: np.ndarray | None = None  # [classes]

    def fit(self, X: np.ndarray, y: Sequence[str]) -> LinearHead:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=self.C, max_iter=3000, random_state=self.seed,
                                class_weight="balanced" if self.balanced else None)
        lr.fit(np.asarray(X, dtype=float), list(y))
        seen = list(lr.classes_)
        coef, b = lr.coef_, lr.intercept_
        if len(seen) == 2:  # sklearn keeps one row for two classes: expand to a softmax pair
            coef, b = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
        d = coef.shape[1]
        self.coef = np.zeros((len(self.classes), d))
        self.intercept = np.full(len(self.classes), -np.inf)
        for i, c in enumerate(seen):
            j = self.classes.index(c)
            self.coef[j], self.intercept[j] = coef[i], b[i]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise ConfigError("the linear head is not fitted", field="model")
        z = np.asarray(X, dtype=float) @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.coef, self.intercept

    @classmethod
    def from_arrays(cls, classes: Sequence[str], coef: np.ndarray, intercept: np.ndarray
                    ) -> LinearHead:
        head = cls(classes)
        if coef.ndim != 2 or coef.shape[0] != len(head.classes) or \
                intercept.shape != (len(head.classes),):
            raise ConfigError(f"saved linear model has shape {coef.shape} / {intercept.shape}"
                              f" for {len(head.classes)} classes", field="model")
        head.coef, head.intercept = coef.astype(float), intercept.astype(float)
        return head


class EmbedHead(Head):
    """The ``embed`` head: logistic regression on the session's text embedding."""

    name = "embed"
    needs = frozenset({"vector"})

    def __init__(self, classes: Sequence[str], seed: int = 0) -> None:
        super().__init__(classes, seed)
        self.lr: LinearHead | None = None

    def fit(self, rows: HeadInputs, y: np.ndarray, folds: Folds) -> np.ndarray:
        oof = np.zeros((len(y), len(self.classes)))
        for tr, te in folds:
            oof[te] = LinearHead(self.classes, seed=self.seed).fit(
                rows.vectors[tr], y[tr]).predict_proba(rows.vectors[te])
        self.lr = LinearHead(self.classes, seed=self.seed).fit(rows.vectors, y)
        return oof

    def predict_proba(self, rows: HeadInputs) -> np.ndarray:
        return self.lr.predict_proba(rows.vectors)

    def params(self) -> dict[str, Any]:
        return {"dim": int(self.lr.coef.shape[1])}

    def save(self, folder: Path) -> list[str]:
        return save_linear(self.lr, folder, "embed")

    @classmethod
    def load(cls, folder: Path, classes: Sequence[str], params: dict[str, Any]) -> EmbedHead:
        head = cls(classes)
        head.lr = load_linear(folder, "embed", classes)
        return head


def save_linear(lr: LinearHead, folder: Path, name: str) -> list[str]:
    """``<name>_coef.npy`` and ``<name>_intercept.npy`` (no pickle)."""
    np.save(folder / f"{name}_coef.npy", lr.coef, allow_pickle=False)
    np.save(folder / f"{name}_intercept.npy", lr.intercept, allow_pickle=False)
    return [f"{name}_coef.npy", f"{name}_intercept.npy"]


def load_linear(folder: Path, name: str, classes: Sequence[str]) -> LinearHead:
    try:
        coef = np.load(folder / f"{name}_coef.npy", allow_pickle=False)
        intercept = np.load(folder / f"{name}_intercept.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read the {name} model: {e}", file=str(folder)) from e
    return LinearHead.from_arrays(classes, coef, intercept)
