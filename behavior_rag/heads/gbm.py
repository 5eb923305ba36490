"""The facts head: LightGBM over a session's feature vector (:class:`FeatureSpec`).

LightGBM rather than scikit-learn's boosting because it gives exact per-feature contributions
(TreeSHAP, ``pred_contrib``) that explanations can cite, and saves as a plain text model that
loads without pickle.

Example:
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [0.1], [0.9]] * 10)
    >>> gbm = GBM(["no", "yes"], ["x"]).fit(X, np.array(["no", "yes", "no", "yes"] * 10))
    >>> int(gbm.predict_proba(np.array([[0.95]])).argmax())
    1
    >>> GBM.from_text(gbm.to_text(), ["no", "yes"], ["x"]).predict_proba(X[:1]).shape
    (1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError, StoreError
from behavior_rag.heads.base import Contributions, Folds, Head, HeadInputs
from behavior_rag.heads.features import FACT_FEATURES, FeatureSpec


class GBMParams(BaseModel):
    """LightGBM settings of the facts head (small data, CPU: few leaves, early-ish rounds)."""

    n_estimators: int = Field(200, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(10, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    threads: int = Field(1, ge=1, description="One thread: on a shared 2-core box OpenMP "
                         "threads wait on each other at every node.")
    seed: int = 0
    rounds_by_cv: bool = Field(True, description="Choose the number of rounds (up to "
                               "n_estimators) by out-of-fold log-loss when fitting with folds.")
    boosting: Literal["gbdt", "rf"] = Field("gbdt", description="gbdt: boosted trees; rf: a "
                                            "random forest (the forest head).")
    extra_trees: bool = Field(False, description="Random split thresholds (extremely "
                              "randomised trees).")
    bagging_fraction: float = Field(1.0, gt=0, le=1)
    bagging_freq: int = Field(0, ge=0)
    min_sum_hessian_in_leaf: float = Field(1e-3, ge=0)


# Candidate round counts, as shares of n_estimators, for FactsHead.fit_folds.
ROUND_FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)


def _lgb():
    try:
        import lightgbm
    except ImportError as e:
        raise ImportError("the facts head needs lightgbm: pip install lightgbm") from e
    return lightgbm


class GBM:
    """Gradient boosting from features to label probabilities (columns in ``classes`` order)."""

    def __init__(self, classes: Sequence[str], feature_names: Sequence[str],
                 params: GBMParams | None = None, categorical: Sequence[int] = ()) -> None:
        self.classes, self.feature_names = list(classes), list(feature_names)
        self.params, self.categorical = params or GBMParams(), list(categorical)
        self.booster = None
        self.rounds: int | None = None  # chosen by fit_folds

    def _lgb_params(self) -> dict:
        p, k = self.params, len(self.classes)
        return {"objective": "binary" if k == 2 else "multiclass",
                **({} if k == 2 else {"num_class": k}), "learning_rate": p.learning_rate,
                "num_leaves": p.num_leaves, "min_data_in_leaf": p.min_data_in_leaf,
                "feature_fraction": p.feature_fraction, "lambda_l2": p.lambda_l2,
                "boosting": p.boosting, "extra_trees": p.extra_trees,
                "bagging_fraction": p.bagging_fraction, "bagging_freq": p.bagging_freq,
                "min_sum_hessian_in_leaf": p.min_sum_hessian_in_leaf,
                "num_threads": p.threads, "seed": p.seed, "deterministic": True,
                "force_col_wise": True, "verbosity": -1}

    def _encode(self, y: Sequence[str]) -> list[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({v for v in y if v not in index})
        if unknown:
            raise ConfigError(f"labels {unknown} are not among the head's classes",
                              field="label", value=unknown[0])
        return [index[v] for v in y]

    def _train(self, X: np.ndarray, y: list[int], rounds: int):
        lgb = _lgb()
        data = lgb.Dataset(np.asarray(X, dtype=float), label=y,
                           feature_name=[f"f{i}" for i in range(X.shape[1])],
                           categorical_feature=self.categorical or "auto", free_raw_data=True)
        return lgb.train(self._lgb_params(), data, num_boost_round=rounds)

    def fit(self, X: np.ndarray, y: Sequence[str]) -> GBM:
        self.booster = self._train(X, self._encode(y), self.params.n_estimators)
        return self

    def fit_folds(self, X: np.ndarray, y: Sequence[str],
                  folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Fit on all rows with the number of rounds (at most ``params.n_estimators``) whose
        out-of-fold log-loss over ``folds`` is lowest; returns the out-of-fold probabilities
        at that count. Why: a fixed count overfits small, imbalanced tasks (Taobao pre-cart
        intent, 6 % positive, wants about a quarter of the default rounds) and underfits
        large ones.

        Example:
            >>> X = np.array([[0.0], [1.0], [0.1], [0.9]] * 10)
            >>> y = np.array(["no", "yes", "no", "yes"] * 10)
            >>> folds = [(np.arange(40) % 2 == i, np.arange(40) % 2 != i) for i in (0, 1)]
            >>> oof = GBM(["no", "yes"], ["x"]).fit_folds(X, y, folds)
            >>> oof.shape
            (40, 2)
        """
        from sklearn.metrics import log_loss

        X, codes = np.asarray(X, dtype=float), np.asarray(self._encode(y))
        n = self.params.n_estimators
        grid = sorted({max(1, round(n * f)) for f in ROUND_FRACTIONS}) \
            if self.params.rounds_by_cv else [n]
        oof = np.zeros((len(grid), len(codes), len(self.classes)))
        for tr, te in folds:
            self.booster = self._train(X[tr], codes[tr].tolist(), n)
            for j, k in enumerate(grid):  # one fold model, scored at each round count
                oof[j, te] = self.predict_proba(X[te], rounds=k)
        losses = [log_loss(codes, o, labels=range(len(self.classes))) for o in oof]
        best = int(np.argmin(losses))
        self.rounds = grid[best]
        self.booster = self._train(X, codes.tolist(), self.rounds)
        return oof[best]

    def _raw(self, X: np.ndarray, **kw) -> np.ndarray:
        if self.booster is None:
            raise ConfigError("the facts head is not fitted", field="model")
        return self.booster.predict(np.asarray(X, dtype=float), num_threads=self.params.threads,
                                    **kw)

    def predict_proba(self, X: np.ndarray, rounds: int | None = None) -> np.ndarray:
        p = self._raw(X, **({"num_iteration": rounds} if rounds else {}))
        return np.column_stack([1 - p, p]) if len(self.classes) == 2 else p

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP per feature toward each class's raw score: ``[n, classes, features]``
        (the last column of LightGBM's output, the bias, is dropped). For two classes the
        positive class gets the model's contributions and the negative one their negation."""
        c = self._raw(X, pred_contrib=True)
        if self.params.boosting == "rf":
            # LightGBM sums a random forest's trees in pred_contrib (and raw scores) where its
            # probabilities average them: divide, so contributions add up to the log-odds the
            # head's probabilities have (they were n_trees times too large)
            c = c / max(1, self.booster.current_iteration())
        d = len(self.feature_names)
        if len(self.classes) == 2:
            return np.stack([-c[:, :d], c[:, :d]], axis=1)
        return c.reshape(len(c), len(self.classes), d + 1)[:, :, :d]

    def logodds_contributions(self, X: np.ndarray, probs: np.ndarray | None = None
                              ) -> np.ndarray:
        """Per feature, its share of each class's log-odds against the other classes:
        ``[n, classes, features]``; > 0: the feature moved the head toward that class.

        Two classes: exactly TreeSHAP's contributions to the raw score. More: the first-order
        chain rule through the softmax, ``c_k - sum_{j != k} p_j c_j / (1 - p_k)``, which, unlike
        log-probability shares, does not vanish when the head is sure."""
        c = self.contributions(X)
        if len(self.classes) == 2:
            return c
        p = self.predict_proba(X) if probs is None else probs
        s = np.einsum("nk,nkf->nf", p, c)[:, None, :]
        rest = np.clip(1.0 - p, 1e-12, None)[:, :, None]
        return c - (s - p[:, :, None] * c) / rest

    def to_text(self) -> str:
        if self.booster is None:
            raise ConfigError("the facts head is not fitted", field="model")
        return self.booster.model_to_string()

    @classmethod
    def from_text(cls, text: str, classes: Sequence[str], feature_names: Sequence[str],
                  params: GBMParams | None = None) -> GBM:
        head = cls(classes, feature_names, params)
        head.booster = _lgb().Booster(model_str=text)
        n = head.booster.num_feature()
        if n != len(head.feature_names):
            raise ConfigError(f"the saved facts model reads {n} features, the manifest names "
                              f"{len(head.feature_names)}", field="features")
        return head


class FactsHead(Head):
    """The ``facts`` head: the session's feature vector (:class:`FeatureSpec`, learnt from the
    training sessions) into LightGBM, its rounds chosen by out-of-fold log-loss; its TreeSHAP
    contributions name the facts that moved a decision."""

    name = "facts"
    needs = frozenset({"facts"})
    FILE = "facts_gbm.txt"

    def __init__(self, classes: Sequence[str], seed: int = 0, gbm: GBMParams | None = None
                 ) -> None:
        super().__init__(classes, seed)
        self.gbm_params = gbm or GBMParams(seed=seed)
        self.spec: FeatureSpec | None = None
        self.gbm: GBM | None = None
        self._last: tuple | None = None

    @property
    def uses_history(self) -> bool:
        return bool(self.spec and self.spec.history)

    def matrix(self, rows: HeadInputs) -> np.ndarray:
        # predict_proba and contributions read the same rows in a row. Read once and
        # replaced whole: two threads classifying at once never get each other's matrix.
        last = self._last
        if last is not None and last[0] is rows:
            return last[1]
        x = self.spec.transform(rows.sessions, rows.facts,
                                rows.fact_matrix() if self.spec.facts else None)
        self._last = (rows, x)
        return x

    def fit(self, rows: HeadInputs, y: np.ndarray, folds: Folds) -> np.ndarray:
        self.spec = FeatureSpec.fit(rows.sessions, history=rows.history)
        self.gbm = GBM(self.classes, self.spec.names, self.gbm_params,
                       self.spec.categorical_index)
        return self.gbm.fit_folds(self.matrix(rows), y, folds)

    def predict_proba(self, rows: HeadInputs) -> np.ndarray:
        return self.gbm.predict_proba(self.matrix(rows))

    def contributions(self, rows: HeadInputs, probs: np.ndarray) -> Contributions | None:
        x = self.matrix(rows)
        if not len(x):
            return None
        return Contributions(values=self.gbm.logodds_contributions(x, probs),
                             names=self.spec.fact_names)

    @property
    def rounds(self) -> int | None:
        return self.gbm.rounds if self.gbm is not None else None

    def params(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json"),
                "gbm": self.gbm_params.model_dump(mode="json"), "rounds": self.rounds}

    def save(self, folder: Path) -> list[str]:
        (folder / self.FILE).write_text(self.gbm.to_text())
        return [self.FILE]

    @classmethod
    def load(cls, folder: Path, classes: Sequence[str], params: dict[str, Any]) -> FactsHead:
        head = cls(classes, gbm=GBMParams.model_validate(params["gbm"]))
        head.spec = FeatureSpec.model_validate(params["spec"])
        if head.spec.facts and head.spec.names[:len(FACT_FEATURES)] != list(FACT_FEATURES):
            raise StoreError("the model's feature set differs from the one this version "
                             "computes: refit", file=str(folder), field="heads.facts.spec")
        head.gbm = GBM.from_text((folder / cls.FILE).read_text(), classes, head.spec.names,
                                 head.gbm_params)
        head.gbm.rounds = params.get("rounds")
        return head
