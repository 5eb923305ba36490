"""The order in which an analyst labels sessions (active learning), after TypiClust
(Hacohen, Dekel & Weinshall, "Active Learning on a Budget", ICML 2022).

The index's sessions are clustered (k-means on discover's rows: text embedding joined to the
z-scored facts) into about as many clusters as there will be labels once this batch is
done, so every new label can go to a cluster nobody has labelled yet. Clusters are served in
TypiClust's order: fewest labels first, larger first (clusters of fewer than
:data:`MIN_CLUSTER` sessions, outliers, last). From each cluster, one session:

* **cold start** (no model fitted yet): its most *typical* session — the one closest on
  average to its 20 nearest cluster-mates. With a few labels, typical sessions teach a model
  the common case of each kind of session; outliers and boundary cases teach it little.
* **once a model is fitted**: its *least-sure* session (smallest gap between the model's two
  most probable labels) — where labels move the decision boundary — still one per cluster,
  so a batch is not spent on near-duplicates of one confusing session (the Cluster-Margin
  idea, Citovsky et al., NeurIPS 2021).

Measured on synthetic personas against random labels (eval/reports/label_efficiency); the
cluster count is rounded up to a power of two, so the clustering is recomputed only when the
label count doubles, not after every label. Small, deterministic numpy/FAISS functions rather
than an active-learning library: the maintained ones (small-text, modAL) wrap their own
classifiers and would need ours adapted to them for two short strategies.

Example:
    >>> import numpy as np
    >>> assign = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    >>> score = np.array([.1, .9, .2, .3, .4, .5, .8, .1, .2, .3, .4])
    >>> picks = cluster_picks(assign, score, labelled=np.zeros(11, bool), n=2)
    >>> picks  # the best-scored session of the larger cluster, then of the other one
    [1, 6]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

MIN_CLUSTER = 5  # TypiClust: smaller clusters are outliers, served last
NEIGHBOURS = 20  # typicality: mean similarity to this many nearest cluster-mates
MAX_CLUSTERS = 512

Strategy = Literal["typical_by_cluster", "least_sure_by_cluster"]
WHY: dict[str, str] = {
    "typical_by_cluster": "no model is fitted yet: the most typical session of each cluster "
    "that has no label yet, larger clusters first, so the first labels show the model the "
    "common case of every kind of session",
    "least_sure_by_cluster": "the fitted model's least-sure session (smallest gap between its "
    "two most probable labels) of each cluster with the fewest labels, so labels go where "
    "the model is unsure and a batch is not spent on near-duplicates",
}


class QueueEntry(BaseModel):
    """One session to label, and why it is here."""

    session_id: str
    cluster: str
    reason: str
    margin: float | None = Field(None, description="Gap between the model's two most "
                                 "probable labels (None at cold start).")


class QueueOrder(BaseModel):
    strategy: Strategy
    why: str
    entries: list[QueueEntry]
    labelled: int = Field(description="Sessions with a label in the label set.")
    pool: int = Field(description="Unlabelled sessions the queue draws from.")
    clusters: int


def margin(probabilities: Mapping[str, float]) -> float:
    """Gap between the two largest probabilities (1.0 with a single label)."""
    top = sorted(probabilities.values(), reverse=True)
    return float(top[0] - top[1]) if len(top) > 1 else 1.0


def n_clusters(labelled: int, n: int, pool: int) -> int:
    """TypiClust's cluster count (labels after this batch), rounded up to a power of two
    (so it changes only when the labels double) and at most the pool and
    :data:`MAX_CLUSTERS`.

    Example:
        >>> n_clusters(0, 16, 1000), n_clusters(20, 8, 1000), n_clusters(900, 8, 1000)
        (16, 32, 512)
    """
    k = 1 << max(1, int(np.ceil(np.log2(max(2, labelled + n)))))
    return int(min(k, MAX_CLUSTERS, pool))


def typicality(x: np.ndarray, assign: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Per row: the inverse mean cosine distance to its ``k`` nearest rows of the same
    cluster (FAISS, exact inner product on L2-normalised rows); 0 for a cluster of one."""
    import faiss

    out = np.zeros(len(x))
    for c in np.unique(assign):
        rows = np.flatnonzero(assign == c)
        kk = min(k, len(rows) - 1)
        if kk < 1:
            continue
        part = np.ascontiguousarray(x[rows], dtype=np.float32)
        index = faiss.IndexFlatIP(part.shape[1])
        index.add(part)
        sims, _ = index.search(part, kk + 1)  # the first hit is the row itself
        out[rows] = 1.0 / (np.mean(1.0 - sims[:, 1:], axis=1) + 1e-6)
    return out


def cluster_picks(assign: np.ndarray, score: np.ndarray, labelled: np.ndarray, n: int,
                  skip: np.ndarray | None = None) -> list[int]:
    """``n`` row positions, one per cluster in TypiClust's order (fewest labelled rows, then
    largest; clusters under :data:`MIN_CLUSTER` rows last), each its cluster's highest
    ``score`` among rows neither labelled nor in ``skip``. A pick counts as a label, so
    with more picks than clusters the order goes round again."""
    taken = labelled | (skip if skip is not None else False)
    k = int(assign.max()) + 1 if len(assign) else 0
    size = np.bincount(assign, minlength=k)
    count = np.bincount(assign[labelled], minlength=k).astype(float)
    free = {c: sorted(np.flatnonzero((assign == c) & ~taken), key=lambda i: -score[i])
            for c in range(k)}
    out: list[int] = []
    while len(out) < n:
        open_ = [c for c in range(k) if free[c]]
        if not open_:
            break
        c = min(open_, key=lambda c: (size[c] < MIN_CLUSTER, count[c], -size[c], c))
        out.append(int(free[c].pop(0)))
        count[c] += 1
    return out
