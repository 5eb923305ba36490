"""Baselines the few-shot classifier is measured against, behind one small :class:`Method` API.

* :class:`Majority` — class priors of the training labels (the floor every method must beat),
* :class:`BowLogReg` — bag of words and numbers of the rendered text + logistic regression
  (the seed's approach),
* :class:`GradientBoosting` — HistGradientBoosting on computed facts (event sessions) or on the
  raw UCI columns (aggregate sessions),
* :class:`EmbeddingLogReg` — logistic regression on session embeddings supplied by the caller.

All are deterministic (fixed seeds) and return probabilities with columns in ``self.classes``.

Example:
    >>> from behavior_rag.synth import generate
    >>> ss = generate(40, seed=0).sessions
    >>> data = TaskData(sessions=ss, labels=[s.label for s in ss], kind="events")
    >>> m = Majority()
    >>> m.fit(data)
    >>> m.predict_proba(data).shape == (40, len(m.classes))
    True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from behavior_rag.heads.features import UCIEncoder, facts_features
from behavior_rag.render import render
from behavior_rag.types import Session

SEED = 0
# Words (starting with a letter) and numbers with their decimals: "$36.63" stays one token, and
# single-character tokens such as an event count of 5 are kept, unlike sklearn's default.
TOKEN_PATTERN = r"(?u)[^\W\d]\w*|\d+(?:\.\d+)?"


@dataclass
class TaskData:
    """Sessions and labels of one split, plus optional precomputed texts and embeddings.

    ``drop`` names aggregate columns hidden from every method (e.g. ``("PageValues",)`` for the
    run without the leaky column); rendered texts leave them out too. Embeddings cannot be
    checked here: ``vectors`` must come from :meth:`texts_or_render` texts.
    """

    sessions: list[Session]
    labels: list[str]
    texts: list[str] | None = None
    vectors: np.ndarray | None = None
    kind: Literal["events", "uci"] = "events"
    drop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.drop = tuple(self.drop)
        n = len(self.sessions)
        if len(self.labels) != n:
            raise ValueError(f"{n} sessions but {len(self.labels)} labels")
        if self.texts is not None and len(self.texts) != n:
            raise ValueError(f"{n} sessions but {len(self.texts)} texts")
        if self.vectors is not None and len(self.vectors) != n:
            raise ValueError(f"{n} sessions but {len(self.vectors)} vectors")
        if self.kind not in ("events", "uci"):
            raise ValueError(f"kind must be 'events' or 'uci', not {self.kind!r}")

    def visible_sessions(self) -> list[Session]:
        """Sessions with the ``drop`` aggregate columns removed."""
        if not self.drop:
            return self.sessions
        return [s.model_copy(update={"aggregates": {k: v for k, v in s.aggregates.items()
                                                    if k not in self.drop}})
                for s in self.sessions]

    def texts_or_render(self) -> list[str]:
        """``texts``, rendering (and keeping) them first when none were given."""
        if self.texts is None:
            self.texts = [render(s) for s in self.visible_sessions()]
        return self.texts


@runtime_checkable
class Method(Protocol):
    """A classifier: ``fit`` on training data, then class probabilities (columns ``classes``)."""

    name: str
    classes: list[str]

    def fit(self, train: TaskData) -> None: ...

    def predict_proba(self, data: TaskData) -> np.ndarray: ...


def _classes(train: TaskData, given: Sequence[str] | None) -> list[str]:
    if given is not None:
        unknown = sorted(set(train.labels) - set(given))
        if unknown:
            raise ValueError(f"training labels {unknown} are not among classes {list(given)}")
        return list(given)
    if not train.labels:
        raise ValueError("cannot fit on an empty training set")
    return sorted(set(train.labels))


def _aligned(proba: np.ndarray, model_classes: Sequence, classes: list[str]) -> np.ndarray:
    """Reorder a model's columns to ``classes``; a class the model never saw gets 0."""
    out = np.zeros((proba.shape[0], len(classes)))
    pos = {c: i for i, c in enumerate(model_classes)}
    for j, c in enumerate(classes):
        if c in pos:
            out[:, j] = proba[:, pos[c]]
    return out


class Majority:
    """Predicts the training class frequencies for every session.

    Example:
        >>> ss = [Session(session_id=f"s{i}", user_id="u") for i in range(4)]
        >>> m = Majority()
        >>> m.fit(TaskData(sessions=ss, labels=["b", "a", "b", "b"]))
        >>> m.classes, m.predict_proba(TaskData(sessions=ss[:1], labels=["a"])).tolist()
        (['a', 'b'], [[0.25, 0.75]])
    """

    name = "majority"

    def __init__(self, classes: Sequence[str] | None = None) -> None:
        self._given = classes
        self.classes: list[str] = []
        self.prior_: np.ndarray | None = None

    def fit(self, train: TaskData) -> None:
        self.classes = _classes(train, self._given)
        counts = Counter(train.labels)
        prior = np.array([counts[c] for c in self.classes], dtype=float)
        self.prior_ = prior / prior.sum()

    def predict_proba(self, data: TaskData) -> np.ndarray:
        if self.prior_ is None:
            raise ValueError("Majority.predict_proba called before fit")
        return np.tile(self.prior_, (len(data.sessions), 1))


class BowLogReg:
    """Word and number uni/bigram counts of the rendered text + balanced logistic regression.

    Example:
        >>> from behavior_rag.synth import generate  # doctest: +SKIP
        >>> m = BowLogReg(); m.fit(train); m.predict_proba(test)  # doctest: +SKIP
    """

    name = "bow_logreg"

    def __init__(self, classes: Sequence[str] | None = None) -> None:
        self._given = classes
        self.classes: list[str] = []
        self.vectorizer_: CountVectorizer | None = None
        self.model_: LogisticRegression | None = None

    def fit(self, train: TaskData) -> None:
        self.classes = _classes(train, self._given)
        self.vectorizer_ = CountVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, 2),
                                           min_df=2, lowercase=True)
        X = self.vectorizer_.fit_transform(train.texts_or_render())
        self.model_ = LogisticRegression(max_iter=2000, class_weight="balanced",
                                         random_state=SEED)
        self.model_.fit(X, train.labels)

    def predict_proba(self, data: TaskData) -> np.ndarray:
        if self.model_ is None or self.vectorizer_ is None:
            raise ValueError("BowLogReg.predict_proba called before fit")
        X = self.vectorizer_.transform(data.texts_or_render())
        return _aligned(self.model_.predict_proba(X), self.model_.classes_, self.classes)


class GradientBoosting:
    """HistGradientBoosting on :func:`facts_features` (``kind="events"``) or on the UCI columns
    coded by a :class:`UCIEncoder` fitted on train (``kind="uci"``, categorical columns native).

    ``class_weight`` defaults to None so the probabilities stay calibrated for ECE and a
    validation-fitted threshold handles imbalance; pass ``"balanced"`` to reweight instead.
    ``n_threads`` caps OpenMP threads during fit/predict (None: the library default, all cores);
    on a shared, busy machine 1 is often many times faster, since OpenMP threads wait on each
    other at every tree node.

    Example:
        >>> m = GradientBoosting(); m.fit(train); m.feature_names_  # doctest: +SKIP
    """

    name = "gradient_boosting"

    def __init__(self, classes: Sequence[str] | None = None,
                 class_weight: str | None = None, max_iter: int = 100,
                 n_threads: int | None = None) -> None:
        self._given = classes
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.n_threads = n_threads
        self.classes: list[str] = []
        self.feature_names_: list[str] = []
        self.encoder_: UCIEncoder | None = None
        self.model_: HistGradientBoostingClassifier | None = None
        self._kind: str | None = None

    def _features(self, data: TaskData) -> np.ndarray:
        if data.kind != self._kind:
            raise ValueError(f"fitted on kind {self._kind!r} data, got {data.kind!r}")
        if data.kind == "uci":
            assert self.encoder_ is not None
            return self.encoder_.transform(data.sessions)
        return facts_features(data.sessions)[0]

    def fit(self, train: TaskData) -> None:
        self.classes = _classes(train, self._given)
        self._kind = train.kind
        if train.kind == "uci":
            self.encoder_ = UCIEncoder(drop=train.drop).fit(train.sessions)
            self.feature_names_ = list(self.encoder_.feature_names_)
            mask = list(self.encoder_.categorical_mask_)
        else:
            self.encoder_ = None
            self.feature_names_ = facts_features([])[1]
            mask = []
        X = self._features(train)
        # A column with no value at all (Taobao has no prices) breaks sklearn's binning.
        self.keep_ = ~np.all(np.isnan(X), axis=0)
        X = X[:, self.keep_]
        mask = [m for m, k in zip(mask, self.keep_) if k] if mask else mask
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, random_state=SEED, class_weight=self.class_weight,
            categorical_features=mask if any(mask) else None)
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            self.model_.fit(X, train.labels)

    def predict_proba(self, data: TaskData) -> np.ndarray:
        if self.model_ is None:
            raise ValueError("GradientBoosting.predict_proba called before fit")
        X = self._features(data)[:, self.keep_]
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            proba = self.model_.predict_proba(X)
        return _aligned(proba, self.model_.classes_, self.classes)


class EmbeddingLogReg:
    """Balanced logistic regression on ``TaskData.vectors`` (session embeddings).

    Example:
        >>> m = EmbeddingLogReg(); m.fit(train_with_vectors)  # doctest: +SKIP
    """

    name = "embedding_logreg"

    def __init__(self, classes: Sequence[str] | None = None, C: float = 1.0) -> None:
        self._given = classes
        self.C = C
        self.classes: list[str] = []
        self.model_: LogisticRegression | None = None

    @staticmethod
    def _vectors(data: TaskData) -> np.ndarray:
        if data.vectors is None:
            raise ValueError("EmbeddingLogReg needs TaskData.vectors (session embeddings); "
                             "embed texts_or_render() and pass them as vectors=")
        return np.asarray(data.vectors, dtype=float)

    def fit(self, train: TaskData) -> None:
        self.classes = _classes(train, self._given)
        self.model_ = LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced",
                                         random_state=SEED)
        self.model_.fit(self._vectors(train), train.labels)

    def predict_proba(self, data: TaskData) -> np.ndarray:
        if self.model_ is None:
            raise ValueError("EmbeddingLogReg.predict_proba called before fit")
        return _aligned(self.model_.predict_proba(self._vectors(data)), self.model_.classes_,
                        self.classes)
