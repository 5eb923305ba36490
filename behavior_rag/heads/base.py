"""What a head is: one model from sessions (and what the featurizer computed for them) to label
probabilities, fitted with out-of-fold predictions for the stack, saved under its own name.

A head declares the inputs it reads (:data:`Need`), so the featurizer computes only what the
chosen heads need: a facts-only model never renders, embeds or searches.

* ``facts``: the sessions' facts (and their feature matrix, :class:`FeatureSpec`);
* ``vector``: the sessions' text embeddings;
* ``neighbors``: their labelled neighbours ``(label, cosine)`` in the index (never the
  session's own user);
* ``events``: the sessions' events themselves (always there; named for clarity).

Example:
    >>> from behavior_rag.heads.registry import head_class
    >>> sorted(head_class("knn").needs)
    ['neighbors']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr

from behavior_rag.types import Session, SessionFacts

Need = Literal["facts", "vector", "neighbors", "events"]
Folds = Sequence[tuple[np.ndarray, np.ndarray]]


class HeadInputs(BaseModel):
    """Sessions with what the heads read besides the events. ``vectors`` / ``neighbors`` are
    None when no chosen head needs them (the featurizer did not compute them)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sessions: list[Session]
    facts: list[SessionFacts] | None = None  # computed once upstream (else by the head)
    vectors: np.ndarray | None = None
    neighbors: list[list[tuple[str, float]]] | None = None
    history: bool = False  # the facts carry cross-session (history) facts
    _fact_x: np.ndarray | None = PrivateAttr(None)

    @property
    def labels(self) -> list[str | None]:
        return [s.label for s in self.sessions]

    def fact_matrix(self) -> np.ndarray:
        """The scalar facts of :data:`~behavior_rag.heads.features.FACT_FEATURES`, one row per
        session, computed once for every head and check that reads them."""
        if self._fact_x is None:
            from behavior_rag.heads.features import facts_features

            self._fact_x = facts_features(self.sessions, self.facts)[0]
        return self._fact_x

    def subset(self, idx: Sequence[int] | np.ndarray) -> HeadInputs:
        """The rows ``idx`` (for a fold)."""
        idx = [int(i) for i in idx]
        return HeadInputs(
            sessions=[self.sessions[i] for i in idx],
            facts=[self.facts[i] for i in idx] if self.facts is not None else None,
            vectors=self.vectors[idx] if self.vectors is not None else None,
            neighbors=[self.neighbors[i] for i in idx] if self.neighbors is not None else None,
            history=self.history)


class Contributions(BaseModel):
    """Per session, class and named input: its share of that class's log-odds (> 0: it moved
    the head toward the class). ``names`` are what evidence cites (facts, items, categories)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    values: np.ndarray  # [sessions, classes, inputs]
    names: list[str]

    def of(self, row: int, cls: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, c in zip(self.names, self.values[row, cls].tolist()):
            out[name] = out.get(name, 0.0) + c
        return out


class Head(ABC):
    """One head. Subclasses set :attr:`name` and :attr:`needs`, and are registered by name
    (:func:`behavior_rag.heads.registry.register_head`, or the ``behavior_rag.heads`` entry
    point group)."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]]

    def __init__(self, classes: Sequence[str], seed: int = 0) -> None:
        self.classes, self.seed = list(classes), seed

    @abstractmethod
    def fit(self, rows: HeadInputs, y: np.ndarray, folds: Folds) -> np.ndarray:
        """Fit on all ``rows`` and return out-of-fold probabilities ``[rows, classes]`` over
        ``folds`` (a user's sessions stay in one fold), which the stack is fitted on."""

    @abstractmethod
    def predict_proba(self, rows: HeadInputs) -> np.ndarray:
        """Probabilities ``[rows, classes]`` (columns in :attr:`classes` order)."""

    def contributions(self, rows: HeadInputs, probs: np.ndarray) -> Contributions | None:
        """What moved each prediction (None: this head cannot say)."""
        return None

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-able parameters, recorded in the model manifest and given back to :meth:`load`."""

    @abstractmethod
    def save(self, folder: Path) -> list[str]:
        """Write this head's files into ``folder`` (names prefixed by :attr:`name`); their names."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, classes: Sequence[str], params: dict[str, Any]) -> Head:
        """The head saved in ``folder`` (files already checksum-checked by the store)."""

    @property
    def uses_history(self) -> bool:
        """Whether the head reads the users' earlier sessions (history facts)."""
        return False


def out_of_fold(make, rows: HeadInputs, y: np.ndarray, folds: Folds, n_classes: int
                ) -> np.ndarray:
    """Out-of-fold probabilities of a head ``make()`` builds fresh per fold (the usual way for
    heads without a cheaper one)."""
    oof = np.zeros((len(y), n_classes))
    for tr, te in folds:
        head = make()
        head.fit(rows.subset(tr), y[tr], [])
        oof[te] = head.predict_proba(rows.subset(te))
    return oof
