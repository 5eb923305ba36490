"""Numeric feature vectors of sessions: the facts head's input (and the tabular baselines').

Event sessions become the scalar facts of :func:`~behavior_rag.facts.compute_facts` (the same
numbers the LLM's explanations may cite, so the baselines see no more than the facts do).
Sessions with aggregates (UCI's one row per session) add them as columns, by what their source
declares (:mod:`behavior_rag.ingest.aggregates`), categorical ones coded by a vocabulary fitted
on the training sessions only (:class:`AggregateEncoder`). Missing values are NaN, which
HistGradientBoosting treats as their own branch.

Example:
    >>> from behavior_rag.synth import generate
    >>> X, names = facts_features(generate(4, seed=0).sessions)
    >>> X.shape == (4, len(names)), "n_events" in names
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError, DataError
from behavior_rag.facts import WEEKDAYS, compute_facts
from behavior_rag.history import HISTORY_FACTS
from behavior_rag.ingest.aggregates import declared_aggregates
from behavior_rag.types import Session, SessionFacts

PARTS_OF_DAY = ("night", "morning", "afternoon", "evening")

# Facts copied as they are (None -> NaN).
_SCALAR_FACTS = (
    "n_events", "n_view", "n_search", "n_cart", "n_remove_from_cart", "n_fav", "n_purchase",
    "duration_s", "dwell_median_s", "dwell_max_s", "distinct_items", "distinct_categories",
    "distinct_brands", "price_min", "price_median", "price_max", "carted_items",
    "purchased_items", "carted_not_purchased", "cart_abandoned", "max_views_one_item",
    "repeat_viewed_items", "start_hour",
)
FACT_FEATURES: tuple[str, ...] = (*_SCALAR_FACTS, "weekday", "part_of_day", "n_queries",
                                  "mean_query_len")
# The fact a feature is computed from, where the names differ (explanations cite facts).
FEATURE_FACT = {"n_queries": "queries", "mean_query_len": "queries"}

# The reserved code for a category not seen when fitting. HistGradientBoosting treats negative
# categorical values as missing, so an unseen value follows the learned missing-value branch.
UNSEEN = -1


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def facts_features(sessions: Iterable[Session], facts: Sequence[SessionFacts] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """``(X, names)``: one row of scalar facts per session, columns named by :data:`FACT_FEATURES`.

    ``cart_abandoned`` is 0/1, ``weekday`` 0 (Monday) - 6, ``part_of_day`` 0 night - 3 evening;
    time facts, dwell, prices and ``mean_query_len`` (characters) are NaN when undefined.

    Example:
        >>> from behavior_rag.synth import generate
        >>> X, names = facts_features(generate(2, seed=1).sessions)
        >>> X.shape[1] == len(FACT_FEATURES)
        True
    """
    rows = []
    sessions = list(sessions)
    for i, s in enumerate(sessions):
        f = facts[i] if facts is not None else compute_facts(s)  # the caller's, if it has them
        row = [_num(getattr(f, name).value) for name in _SCALAR_FACTS]
        wd, pod, qs = f.weekday.value, f.part_of_day.value, f.queries.value
        row.append(float(WEEKDAYS.index(wd)) if wd is not None else math.nan)
        row.append(float(PARTS_OF_DAY.index(pod)) if pod is not None else math.nan)
        row.append(float(len(qs)))
        row.append(float(np.mean([len(q) for q in qs])) if qs else math.nan)
        rows.append(row)
    X = np.asarray(rows, dtype=float).reshape(len(rows), len(FACT_FEATURES))
    return X, list(FACT_FEATURES)


def history_features(facts: Sequence[SessionFacts]) -> np.ndarray:
    """One row of :data:`~behavior_rag.history.HISTORY_FACTS` per session (NaN: undefined, or
    no history known)."""
    rows = [[_num(f.history[n].value) if n in f.history else math.nan for n in HISTORY_FACTS]
            for f in facts]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(HISTORY_FACTS))


def _sort_key(v) -> tuple[str, object]:
    # Columns are homogeneous in practice; the type name keeps a stray mixed column sortable.
    return (type(v).__name__, v)


class AggregateEncoder:
    """Session-level aggregates -> float matrix, categorical ones as integer codes.

    :meth:`fit` learns the columns: the aggregates the training sessions carry, those their
    sources declare first (:func:`~behavior_rag.ingest.aggregates.declared_aggregates`, in
    declaration order) and undeclared ones sorted after. A declared ``categorical`` or ``bool``
    aggregate is coded by a sorted vocabulary (codes ``0..k-1``), a ``numeric`` one is a number;
    an undeclared one is categorical if it holds text or yes/no values. :meth:`transform` maps
    values unseen at fit time to :data:`UNSEEN` and absent values to NaN. ``drop`` columns
    never become features.

    Example:
        >>> s = Session(session_id="s", user_id="u", source="uci",
        ...             aggregates={"PageValues": 3.0, "Month": "May", "Browser": 2})
        >>> enc = AggregateEncoder(drop=()).fit([s])
        >>> enc.feature_names_, enc.categorical_mask_
        (['Browser', 'PageValues', 'Month'], [True, False, True])
        >>> enc.transform([s]).tolist()
        [[0.0, 3.0, 0.0]]
    """

    def __init__(self, drop: Sequence[str] = ()) -> None:
        self.drop = tuple(drop)
        self.feature_names_: list[str] = []
        self.categorical_mask_: list[bool] = []
        self.vocab_: dict[str, dict[object, int]] = {}
        self._fitted = False

    def fit(self, sessions: Iterable[Session]) -> AggregateEncoder:
        sessions = list(sessions)
        keys = {k for s in sessions for k in s.aggregates} - set(self.drop)
        declared = {a.name: a.kind for a in declared_aggregates(sessions) if a.name in keys}
        names = [*declared, *sorted(keys - set(declared))]
        values: dict[str, set] = {n: set() for n in names}
        for s in sessions:
            for n in names:
                v = s.aggregates.get(n)
                if v is not None:
                    values[n].add(v)
        for n, kind in declared.items():
            _check_kind(n, kind, values[n])
        # Undeclared: text and booleans cannot be quantities, whatever the column is called.
        cat = [declared[n] != "numeric" if n in declared else
               any(isinstance(v, (str, bool)) for v in values[n]) for n in names]
        self.feature_names_, self.categorical_mask_ = names, cat
        self.vocab_ = {n: {v: i for i, v in enumerate(sorted(values[n], key=_sort_key))}
                       for n, c in zip(names, cat) if c}
        self._fitted = True
        return self

    @classmethod
    def from_vocab(cls, names: Sequence[str], categorical: Sequence[bool],
                   vocab: dict[str, Sequence]) -> AggregateEncoder:
        """A fitted encoder rebuilt from its columns and vocabularies (values in code order)."""
        enc = cls()
        enc.feature_names_, enc.categorical_mask_ = list(names), list(categorical)
        enc.vocab_ = {n: {v: i for i, v in enumerate(vals)} for n, vals in vocab.items()}
        enc._fitted = True
        return enc

    def transform(self, sessions: Iterable[Session]) -> np.ndarray:
        if not self._fitted:
            raise ValueError("AggregateEncoder.transform called before fit")
        rows = []
        for s in sessions:
            row = []
            for n in self.feature_names_:
                v = s.aggregates.get(n)
                if v is None:
                    row.append(math.nan)
                elif n in self.vocab_:
                    row.append(float(self.vocab_[n].get(v, UNSEEN)))
                else:
                    row.append(_quantity(v))
            rows.append(row)
        return np.asarray(rows, dtype=float).reshape(len(rows), len(self.feature_names_))

    def fit_transform(self, sessions: Iterable[Session]) -> np.ndarray:
        sessions = list(sessions)
        return self.fit(sessions).transform(sessions)


def _check_kind(name: str, kind: str, values: set) -> None:
    """A declared aggregate's training values fit its kind, else a DataError naming it."""
    if kind == "numeric":
        bad = [v for v in values if isinstance(v, str)]
    elif kind == "bool":
        bad = [v for v in values if not isinstance(v, bool)]
    else:
        return
    if bad:
        raise DataError(f"aggregate {name!r} is declared {kind} but holds {bad[0]!r}",
                        field=f"aggregates.{name}", value=bad[0])


def _quantity(v) -> float:
    """A numeric aggregate's value; text where a number belongs counts as missing."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def aggregate_features(sessions: Iterable[Session], drop: Sequence[str] = ()
                       ) -> tuple[np.ndarray, list[str], list[bool]]:
    """``(X, names, categorical_mask)`` with the vocabulary fitted on ``sessions`` themselves.

    For a train/test pair fit an :class:`AggregateEncoder` on train and transform both
    instead, so test categories never shape the coding. ``drop=("PageValues",)`` is UCI's run
    without the leaky column.

    Example:
        >>> from behavior_rag.ingest.load import load_events  # doctest: +SKIP
        >>> X, names, mask = aggregate_features(load_events(path, "uci").sessions,
        ...                                     drop=("PageValues",))  # doctest: +SKIP
        >>> "PageValues" in names  # doctest: +SKIP
        False
    """
    enc = AggregateEncoder(drop=drop)
    X = enc.fit_transform(sessions)
    return X, list(enc.feature_names_), list(enc.categorical_mask_)


# The names these had when UCI was the only source with aggregates (the eval baselines use them).
UCIEncoder = AggregateEncoder
uci_features = aggregate_features


class FeatureSpec(BaseModel):
    """The facts head's feature vector, learnt from the training sessions and saved with the
    fitted model: the scalar facts of :data:`FACT_FEATURES` (when sessions have events) then
    the sessions' aggregate columns (as their source declares them, e.g. UCI's), categorical
    ones coded by a vocabulary. Prediction builds the same columns from what is recorded here:
    an aggregate a session lacks is NaN, a category unseen in training :data:`UNSEEN`.

    Example:
        >>> from behavior_rag.synth import generate
        >>> spec = FeatureSpec.fit(generate(20, seed=0).sessions)
        >>> spec.names[:2], spec.transform(generate(3, seed=1).sessions).shape
        (['n_events', 'n_view'], (3, 27))
    """

    facts: bool = Field(description="The FACT_FEATURES block is included (sessions have events).")
    history: bool = Field(False, description="The HISTORY_FACTS block is included (fitted with "
                          "a history of earlier sessions).")
    columns: list[str] = Field(default_factory=list, description="Aggregate columns, in order.")
    categorical: list[bool] = Field(default_factory=list, description="Per column: coded by "
                                    "its vocabulary (codes 0..k-1, unseen -1) or a number.")
    vocab: dict[str, list[str | bool | int | float]] = Field(
        default_factory=dict, description="Per categorical column, its values in code order.")

    @classmethod
    def fit(cls, sessions: Sequence[Session], drop: Sequence[str] = (),
            history: bool = False) -> FeatureSpec:
        if not sessions:
            raise ConfigError("no training sessions to learn features from", field="train")
        enc = AggregateEncoder(drop=drop).fit(sessions)
        return cls(facts=any(s.events for s in sessions), history=history,
                   columns=enc.feature_names_,
                   categorical=enc.categorical_mask_,
                   vocab={n: list(v) for n, v in enc.vocab_.items()})

    @property
    def names(self) -> list[str]:
        return [*(FACT_FEATURES if self.facts else ()), *(HISTORY_FACTS if self.history else ()),
                *self.columns]

    @property
    def fact_names(self) -> list[str]:
        """Per feature, the SessionFacts name it rests on (aggregate columns: their own)."""
        return [FEATURE_FACT.get(n, n) for n in self.names]

    @property
    def categorical_index(self) -> list[int]:
        """Positions of the categorical columns in :attr:`names`."""
        off = (len(FACT_FEATURES) if self.facts else 0) + (len(HISTORY_FACTS) if self.history
                                                            else 0)
        return [off + i for i, c in enumerate(self.categorical) if c]

    def transform(self, sessions: Sequence[Session],
                  facts: Sequence[SessionFacts] | None = None,
                  fact_x: np.ndarray | None = None) -> np.ndarray:
        """One float row per session (NaN: undefined or absent); ``facts``: already computed;
        ``fact_x``: their FACT_FEATURES block, already computed."""
        enc = AggregateEncoder.from_vocab(self.columns, self.categorical, self.vocab)
        parts = [facts_features(sessions, facts)[0] if fact_x is None else fact_x] \
            if self.facts else []
        if self.history:
            parts.append(history_features(facts if facts is not None else
                                          [compute_facts(s) for s in sessions]))
        parts.append(enc.transform(sessions))
        return np.hstack(parts) if parts else np.zeros((len(sessions), 0))
