"""The order in which an analyst labels sessions (active learning).

* **Cold start** (no model fitted yet): discover's clusters of the index's sessions, and their
  representatives — the session nearest each centroid first, larger clusters first, then each
  cluster's second and third nearest, then the rest round-robin over clusters. The first labels
  then cover every kind of session the shop has, instead of the most common kind many times.
* **Once a model is fitted**: the model's least-sure sessions (smallest gap between its two
  most probable labels), spread across the clusters — Cluster-Margin sampling (Citovsky et
  al., NeurIPS 2021): take the least-sure candidates (ten times what is asked for), then
  round-robin over their clusters, each cluster's least sure first. Margin alone would spend
  a batch on near-duplicates of one confusing session; clusters alone would ignore what the
  model already knows.

Both are small, deterministic functions of their inputs (no randomness beyond a seeded order
of the leftovers), written here rather than taken from an active-learning library: the
maintained ones (small-text, modAL) wrap their own classifiers and would need ours adapted to
them for two ~30-line strategies.

Example:
    >>> entries = least_sure_order({"a": 0.1, "b": 0.02, "c": 0.5}, {"a": "x", "b": "x",
    ...                            "c": "y"}, n=3)
    >>> [e.session_id for e in entries]
    ['b', 'c', 'a']
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field

CANDIDATES = 10  # Cluster-Margin: least-sure candidates per entry asked for (the paper's k_m ≈ 10 k_t)

Strategy = Literal["cluster_representatives", "least_sure_by_cluster"]
WHY: dict[str, str] = {
    "cluster_representatives": "no model is fitted yet: one representative of each cluster "
    "of sessions, largest clusters first, so the first labels cover every kind of session",
    "least_sure_by_cluster": "the fitted model's least-sure sessions (smallest gap between "
    "its two most probable labels), spread across clusters so a batch is not spent on "
    "near-duplicates",
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


def representative_order(representatives: Mapping[str, Sequence[str]],
                         members: Mapping[str, Sequence[str]], n: int, seed: int = 0,
                         done: frozenset[str] | set[str] = frozenset()) -> list[QueueEntry]:
    """Cold start: ``representatives`` (cluster -> ids nearest its centroid, in order) round
    by round, larger clusters first; then the other unlabelled ``members`` round-robin
    (seeded). A labelled representative keeps its round: its cluster is covered there."""
    order = sorted(members, key=lambda c: (-len(members[c]), c))
    out: list[QueueEntry] = []
    seen: set[str] = set(done)
    depth = max((len(r) for r in representatives.values()), default=0)
    for rank in range(depth):
        for c in order:
            reps = representatives.get(c, ())
            if rank < len(reps) and reps[rank] not in seen:
                seen.add(reps[rank])
                out.append(QueueEntry(session_id=reps[rank], cluster=c, reason=(
                    f"representative {rank + 1} of cluster {c} ({len(members[c])} "
                    "sessions)")))
    rng = random.Random(seed)
    rest = {c: [m for m in members[c] if m not in seen] for c in order}
    rest = {c: rng.sample(v, len(v)) for c, v in rest.items()}
    while len(out) < n and any(rest.values()):
        for c in order:
            if rest[c]:
                out.append(QueueEntry(session_id=rest[c].pop(), cluster=c,
                                      reason=f"another session of cluster {c}"))
    return out[:n]


def least_sure_order(margins: Mapping[str, float], cluster_of: Mapping[str, str], n: int
                     ) -> list[QueueEntry]:
    """Cluster-Margin: the ``CANDIDATES * n`` least-sure sessions, round-robin over their
    clusters (the cluster holding the least-sure session first), least sure first in each."""
    cand = sorted(margins, key=lambda s: (margins[s], s))[: max(n * CANDIDATES, n)]
    by_cluster: dict[str, list[str]] = defaultdict(list)
    for s in cand:
        by_cluster[cluster_of.get(s, "?")].append(s)
    order = sorted(by_cluster, key=lambda c: margins[by_cluster[c][0]])
    out: list[QueueEntry] = []
    while len(out) < n and any(by_cluster.values()):
        for c in order:
            if by_cluster[c] and len(out) < n:
                s = by_cluster[c].pop(0)
                out.append(QueueEntry(session_id=s, cluster=c, margin=round(margins[s], 4),
                                      reason=f"the model is unsure (gap {margins[s]:.2f} "
                                      f"between its top two labels), cluster {c}"))
    return out

