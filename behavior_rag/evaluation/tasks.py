"""Labelled tasks built from sessions, and honest splits (by user, seeded).

Splits are reproducible across installations: the same data and seed give the same parts
everywhere. Pseudonymised user ids cannot be the key (each installation has its own secret
pseudonym key), so a pseudonymised user is keyed by a hash of what the data itself records
about it (its events' times, types and items); raw or synthetic ids are used as they are. The
pseudonyms stay as strong as before: the split neither needs the secret key nor reveals an id.

Example:
    >>> from behavior_rag.synth import generate
    >>> s = split_by_user(generate(100, seed=1).sessions, seed=0)
    >>> not ({x.user_id for x in s.train} & {x.user_id for x in s.test})
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from behavior_rag.ingest.pseudonym import split_keys
from behavior_rag.labels.outcomes import label_sessions
from behavior_rag.labels.targets import load_target
from behavior_rag.types import Session

BUY, NO_BUY = "will_buy", "no_purchase"


@dataclass
class Split:
    train: list[Session]
    dev: list[Session]
    test: list[Session]


def split_by_user(sessions: Sequence[Session], seed: int, dev_frac: float = 0.2,
                  test_frac: float = 0.2) -> Split:
    """Users shuffled with ``seed`` (by :func:`split_keys`, so every installation splits the
    same data alike); no user has sessions in two parts."""
    keys = split_keys(sessions)
    order = sorted(set(keys.values()))
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    n_dev, n_test = int(n * dev_frac), int(n * test_frac)
    dev_k, test_k = set(order[:n_dev]), set(order[n_dev: n_dev + n_test])
    part = {u: "dev" if k in dev_k else "test" if k in test_k else "train"
            for u, k in keys.items()}
    return Split([s for s in sessions if part[s.user_id] == "train"],
                 [s for s in sessions if part[s.user_id] == "dev"],
                 [s for s in sessions if part[s.user_id] == "test"])


def purchase_intent(sessions: Sequence[Session], min_events: int = 1) -> list[Session]:
    """The ``purchase`` outcome target users fit with (``behavior-rag fit --target
    purchase``): the events *before* the first cart or purchase, labelled ``will_buy`` if the
    whole session contains a purchase, else ``no_purchase``. Sessions with fewer than
    ``min_events`` events before that point are left out (nothing to predict from)."""
    target = load_target("purchase").model_copy(update={"min_events": min_events})
    return label_sessions(sessions, target).sessions


def balanced_sample(sessions: Sequence[Session], per_label: int, seed: int) -> list[Session]:
    """Up to ``per_label`` sessions of each label, drawn with ``seed`` (input order kept)."""
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for label in sorted({s.label for s in sessions if s.label}):
        idx = [i for i, s in enumerate(sessions) if s.label == label]
        keep.update(rng.choice(idx, size=min(per_label, len(idx)), replace=False).tolist())
    return [s for i, s in enumerate(sessions) if i in keep]
