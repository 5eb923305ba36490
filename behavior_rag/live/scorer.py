"""Scoring a live session from its running facts, through the classifier's own steps.

The batch path (``Classifier.classify_many``) cuts each session at the prediction point,
guards its free text and computes its facts: O(session) per call, paid again on every append
of a live session. A live session keeps all three up to date per event instead
(:class:`~behavior_rag.running_facts.RunningFacts`), and :class:`LiveScorer` hands that
snapshot to the same featurizer (``Featurizer.prepare_known``: history facts, vectors and
neighbours as the model needs), model and decider — the prediction and its evidence are the
batch path's (tests/test_live_incremental.py).

Where the known path does not apply the manager classifies the whole session instead: a
model that may ask the LLM (the service serialises the LLM for its callers), or a classifier
whose prediction point or text settings differ from the live sessions' (a refit since they
opened).

Example:
    >>> scorer = LiveScorer(lambda: rag.classifier)                       # doctest: +SKIP
    >>> scorer(open_session.running.snapshot()).label                     # doctest: +SKIP
    'purchase'
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from behavior_rag.classify import Classifier
from behavior_rag.classify.decider import DEFAULT_CASCADE
from behavior_rag.heads.cascade import CascadeParams
from behavior_rag.heads.model import HeadsModel
from behavior_rag.labels.targets import InputCut
from behavior_rag.running_facts import Snapshot
from behavior_rag.types import PatternPrediction

FACTS_ONLY = frozenset({"facts"})


class LiveScorer:
    """Predictions of running snapshots with ``classifier()`` (read each call: a fit swaps
    it); ``read``: the lock a model that reads the index or the session store needs."""

    def __init__(self, classifier: Callable[[], Classifier],
                 read: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.classifier, self.read = classifier, read
        self._default: tuple[Classifier, HeadsModel] | None = None

    def usable(self, cut: InputCut | None, *, guard: bool, tz: str) -> bool:
        """Whether snapshots of sessions cut by ``cut`` (guarded or not, facts in ``tz``) give
        the batch path's prediction, and the LLM is never asked."""
        clf = self.classifier()
        return clf.featurizer.matches(cut, guard=guard, tz=tz) and not _may_ask(clf)

    def cheap(self) -> bool:
        """Facts only (no vectors, neighbours, history or LLM): about a millisecond whatever
        the session's length, and nothing read from the index — the service scores such a
        model on its event loop, without a thread hop (eval/reports/bench_live.md)."""
        clf = self.classifier()
        return clf.needs() <= FACTS_ONLY and clf.history is None and not _may_ask(clf)

    def __call__(self, snap: Snapshot) -> PatternPrediction:
        """The prediction of ``snap`` (check :meth:`usable` first)."""
        clf = self.classifier()
        heads, cascade = self._model(clf)
        # a facts-only model reads neither the index nor the store: no lock to wait for
        with nullcontext() if self.cheap() else self.read():
            prepared = clf.featurizer.prepare_known([snap], clf.needs())
            return clf.decider.decide(prepared, heads, cascade, clf.step, clf.featurizer)[0]

    def _model(self, clf: Classifier) -> tuple[HeadsModel, CascadeParams]:
        """The heads and cascade ``clf`` decides with (an index nobody fitted: the default
        kNN model, made once per classifier)."""
        if clf.model is not None:
            return clf.model.heads, clf.model.cascade
        if self._default is None or self._default[0] is not clf:
            self._default = (clf, HeadsModel.default(clf.labels))
        return self._default[1], DEFAULT_CASCADE


def _may_ask(clf: Classifier) -> bool:
    """Whether the cascade may ask ``clf``'s LLM (``classify.llm`` not ``never``)."""
    return clf.llm is not None and clf.settings.classify.llm != "never"
