"""The labelling desk: what the queue (``/v1/labels/queue``, ``/ui/label``) and the label
efficiency eval ask for — the next sessions to label in active-learning order
(:mod:`.queue`), and for one session what an analyst needs to decide: its timeline, the
model's prediction with evidence and nearest labelled sessions, and suggested labels from the
model, the rules and the LLM, each marked with where it came from.

Three things are cached: discover's clusters of the index's sessions (at most ``max_pool``
of them, seeded; their names are what an entry shows), the queue's own clusters (as many as
labels, rounded up to a power of two: recomputed when the labels double) with each session's
typicality, and the model's margins (once per model, until the next ``fit``).

Example:
    >>> desk = LabelDesk(embedder, taxonomy)                               # doctest: +SKIP
    >>> desk.order(sessions, labelset, classifier, n=16).strategy          # doctest: +SKIP
    'typical_by_cluster'
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.annotate.queue import (
    WHY,
    QueueEntry,
    QueueOrder,
    cluster_picks,
    margin,
    n_clusters,
    typicality,
)
from behavior_rag.classify import Classifier, LLMResult
from behavior_rag.discover import Discovery, cluster_rows, discover, spherical_kmeans
from behavior_rag.errors import ConfigError
from behavior_rag.labels.labelset import LabelEvent, LabelSet, NewLabel
from behavior_rag.labels.rules import holding
from behavior_rag.retrieve import Neighbor
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import PatternPrediction, Session

MAX_CLUSTERS = 16
NEIGHBOURS = 5  # labelled neighbours shown per queue entry


class Suggestion(BaseModel):
    """A label proposed for a session, and by what."""

    label: str
    source: Literal["model", "rules", "llm"]
    probability: float | None = None
    note: str = ""


class LabelledNeighbour(BaseModel):
    """A similar session that already has a label in the label set."""

    session_id: str
    label: str
    source: str
    similarity: float


class QueueItem(BaseModel):
    """What the analyst sees for one session of the queue."""

    entry: QueueEntry
    session: Session
    prediction: PatternPrediction | None = Field(None, description="The fitted model's, with "
                                                 "evidence and the nearest labelled sessions.")
    suggestions: list[Suggestion] = Field(default_factory=list)
    current: LabelEvent | None = Field(None, description="The session's latest label, if any.")
    neighbours: list[LabelledNeighbour] = Field(
        default_factory=list, description="The most similar sessions that already carry a "
        "label in the label set (before any fit, too).")


def quiet(clf: Classifier) -> Classifier:
    """``clf`` without its LLM: the queue's margins and evidence are the model's own."""
    return Classifier(clf.index, clf.embedder, None, clf.taxonomy, settings=clf.settings,
                      model=clf.model, history=clf.history)


def answer(got: LLMResult) -> str | None:
    """The LLM's label: the one it generated, else its best-scored option (None: failed)."""
    return got.label or (max(got.scores, key=got.scores.get) if got.scores else None)


def llm_labels(clf: Classifier, sessions: Sequence[Session]) -> list[NewLabel]:
    """The classifier's LLM's label for each session it answers (few-shot from the nearest
    labelled sessions when the index has some and ``classify.k_examples`` > 0, else
    zero-shot from the taxonomy's descriptions): suggestions, to be judged by the analyst."""
    out = []
    for s, g in zip(sessions, clf.llm_many(clf.prepare(list(sessions)))):
        label = answer(g)
        if label is not None:  # None: the LLM failed for it (its fallback says why)
            out.append(NewLabel(session_id=s.session_id, label=label))
    return out


class LabelDesk:
    """Clusters and margins, cached; see the module docstring."""

    def __init__(self, embedder, taxonomy: Taxonomy, *, max_pool: int = 20_000,
                 seed: int = 0) -> None:
        self.embedder, self.taxonomy = embedder, taxonomy
        self.max_pool, self.seed = max_pool, seed
        self._lock = threading.Lock()
        self._clusters: tuple[frozenset[str], Discovery] | None = None
        self._margins: tuple[object, dict[str, float]] | None = None
        self._rows: tuple[frozenset[str], np.ndarray] | None = None
        self._fine: tuple[int, np.ndarray, np.ndarray] | None = None

    def pool(self, sessions: Sequence[Session]) -> list[Session]:
        """The sessions the queue draws from: those with events, at most ``max_pool``."""
        have = [s for s in sessions if s.events]
        if len(have) > self.max_pool:
            have = random.Random(self.seed).sample(have, self.max_pool)
        return have

    def has_clusters(self, sessions: Sequence[Session], k: int | None = None) -> bool:
        """Whether :meth:`clusters` of these sessions (and with ``k``, :meth:`fine`) is
        computed already (cheap to ask)."""
        key = frozenset(s.session_id for s in sessions)
        c, r, f = self._clusters, self._rows, self._fine
        return c is not None and c[0] == key and (k is None or (
            r is not None and r[0] == key and f is not None and f[0] == k))

    def clusters(self, sessions: Sequence[Session]) -> Discovery:
        key = frozenset(s.session_id for s in sessions)
        with self._lock:
            if self._clusters is None or self._clusters[0] != key:
                k = max(2, min(MAX_CLUSTERS, len(sessions) // 25))
                self._clusters = (key, discover(sessions, self.embedder, k=k, seed=self.seed))
            return self._clusters[1]

    def has_margins(self, clf: Classifier) -> bool:
        """Whether :meth:`margins` for ``clf``'s model is computed already."""
        m = self._margins
        return m is not None and m[0] is clf.model

    def margins(self, clf: Classifier, sessions: Sequence[Session]) -> dict[str, float]:
        """The model's top-two gap for each session (cached per model object, which the
        cache holds, so a later model can never be taken for it)."""
        with self._lock:
            if not self.has_margins(clf):
                self._margins = (clf.model, {})
            known = self._margins[1]
            todo = [s for s in sessions if s.session_id not in known]  # e.g. added since
            if todo:
                known.update((p.session_id, margin(p.probabilities))
                             for p in quiet(clf).classify_many(todo))
            return known

    def fine(self, sessions: Sequence[Session], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The queue's ``k`` clusters of ``sessions`` (k-means on discover's rows) and each
        session's typicality in its cluster; cached per set of sessions and ``k``."""
        key = frozenset(s.session_id for s in sessions)
        with self._lock:
            if self._rows is None or self._rows[0] != key:
                self._rows = (key, cluster_rows(sessions, self.embedder))
                self._fine = None
            if self._fine is None or self._fine[0] != k:
                x = self._rows[1]
                # restarts pay for themselves on a few clusters; on hundreds, one run
                _, assign = spherical_kmeans(x, k, self.seed, restarts=4 if k <= 64 else 1)
                self._fine = (k, assign, typicality(x, assign))
            return self._fine[1], self._fine[2]

    def order(self, sessions: Sequence[Session], labels: LabelSet, clf: Classifier | None,
              n: int, skip: Sequence[str] = ()) -> QueueOrder:
        """The next ``n`` unlabelled sessions to label (``skip``: ids passed over for now);
        ``clf``: the classifier whose fitted model ranks them (None or no fitted model:
        cold start)."""
        pool = self.pool(sessions)
        if len(pool) < 10:
            raise ConfigError(f"the labelling queue needs at least 10 sessions with events, "
                              f"the index has {len(pool)}", field="sessions")
        names = self.clusters(pool).assignments  # discover's clusters: what the UI shows
        ids = [s.session_id for s in pool]
        done, passed = set(labels.latest()), set(skip)
        labelled = np.array([i in done for i in ids])
        assign, typical = self.fine(pool, n_clusters(int(labelled.sum()), n, len(pool)))
        size = np.bincount(assign)
        have = np.bincount(assign[labelled], minlength=len(size))  # labels per cluster
        fitted = clf is not None and clf.model is not None
        m = self.margins(clf, pool) if fitted else {}
        score = -np.array([m[i] for i in ids]) if fitted else typical
        picks = cluster_picks(assign, score, labelled, n, np.array([i in passed for i in ids]))
        if fitted:  # the batch served least sure first (the analyst may stop any time)
            picks.sort(key=lambda i: m[ids[i]])
        entries = [QueueEntry(session_id=ids[i], cluster=names[ids[i]],
                              margin=round(m[ids[i]], 4) if fitted else None,
                              reason=(f"the model is unsure (gap {m[ids[i]]:.2f} between its "
                                      "top two labels)" if fitted else "the most typical "
                                      "session") + f" of a cluster of {size[assign[i]]} "
                              f"sessions with {int(have[assign[i]])}"
                              " labelled")
                   for i in picks]
        strategy = "least_sure_by_cluster" if fitted else "typical_by_cluster"
        return QueueOrder(strategy=strategy, why=WHY[strategy], entries=entries,
                          labelled=len(done), pool=int((~labelled).sum()),
                          clusters=int(len(size)))

    def item(self, entry: QueueEntry, session: Session, labels: LabelSet,
             clf: Classifier | None, *, llm: bool = False,
             similar: Sequence[Neighbor] = ()) -> QueueItem:
        """What the analyst sees for ``session``; ``llm``: ask the classifier's LLM too;
        ``similar``: its nearest sessions (those with a label are shown)."""
        pred = quiet(clf).classify(session, voters=True) if clf is not None else None
        sugg = []
        if pred is not None and not pred.abstained:
            sugg.append(Suggestion(label=pred.label, source="model",
                                   probability=round(pred.probabilities[pred.label], 4),
                                   note="the fitted model" if clf.model is not None else
                                   "the vote of the nearest labelled sessions"))
        current = labels.latest().get(session.session_id)
        if current is not None and current.source == "llm":
            sugg.append(Suggestion(label=current.label, source="llm", note=(
                f"suggested by {current.who}; judged against your labels in the "
                "agreement above")))
        rule = holding(session, self.taxonomy)
        if len(rule) == 1:
            sugg.append(Suggestion(label=rule[0], source="rules",
                                   note="the only label whose definition holds"))
        if llm and clf is not None and clf.llm is not None and not any(
                x.source == "llm" for x in sugg):
            got = clf.llm_many(clf.prepare([session]))[0]
            label = answer(got)
            if label is not None:
                sugg.append(Suggestion(label=label, source="llm", note=(
                    f"few-shot from {len(got.examples)} labelled sessions" if got.examples
                    else "zero-shot from the label descriptions")))
        latest = labels.latest()
        near = [LabelledNeighbour(session_id=n.session_id, label=latest[n.session_id].label,
                                  source=latest[n.session_id].source,
                                  similarity=round(n.score, 4))
                for n in similar if n.session_id in latest
                and n.session_id != session.session_id][:NEIGHBOURS]
        return QueueItem(entry=entry, session=session, prediction=pred, suggestions=sugg,
                         current=current, neighbours=near)
