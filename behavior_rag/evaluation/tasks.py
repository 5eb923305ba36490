"""Labelled tasks built from sessions, and honest splits (by user, seeded).

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

from behavior_rag.types import Session

BUY, NO_BUY = "will_buy", "no_purchase"


@dataclass
class Split:
    train: list[Session]
    dev: list[Session]
    test: list[Session]


def split_by_user(sessions: Sequence[Session], seed: int, dev_frac: float = 0.2,
                  test_frac: float = 0.2) -> Split:
    """Users shuffled with ``seed``; no user has sessions in two parts."""
    users = sorted({s.user_id for s in sessions})
    np.random.default_rng(seed).shuffle(users)
    n = len(users)
    n_dev, n_test = int(n * dev_frac), int(n * test_frac)
    dev_u, test_u = set(users[:n_dev]), set(users[n_dev: n_dev + n_test])
    return Split([s for s in sessions if s.user_id not in dev_u and s.user_id not in test_u],
                 [s for s in sessions if s.user_id in dev_u],
                 [s for s in sessions if s.user_id in test_u])


def purchase_intent(sessions: Sequence[Session], min_events: int = 1) -> list[Session]:
    """The purchase-intent task: the events *before* the first cart or purchase event, labelled
    ``will_buy`` if the whole session contains a purchase, else ``no_purchase``.

    Sessions whose prefix has fewer than ``min_events`` events (e.g. starting with a cart) are
    left out: there is nothing to predict from.
    """
    out = []
    for s in sessions:
        cut = next((i for i, e in enumerate(s.events) if e.type in ("cart", "purchase")),
                   len(s.events))
        if cut < min_events:
            continue
        bought = any(e.type == "purchase" for e in s.events)
        out.append(s.model_copy(update={"events": list(s.events[:cut]),
                                        "label": BUY if bought else NO_BUY}))
    return out


def balanced_sample(sessions: Sequence[Session], per_label: int, seed: int) -> list[Session]:
    """Up to ``per_label`` sessions of each label, drawn with ``seed`` (input order kept)."""
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for label in sorted({s.label for s in sessions if s.label}):
        idx = [i for i, s in enumerate(sessions) if s.label == label]
        keep.update(rng.choice(idx, size=min(per_label, len(idx)), replace=False).tolist())
    return [s for i, s in enumerate(sessions) if i in keep]
