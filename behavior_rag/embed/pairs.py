"""Training pairs for tuning the embedder, already grouped into MultipleNegativesRanking batches.

MultipleNegativesRankingLoss treats every other row's positive in a batch as a negative, so the
batches are built here, not left to a random sampler:

- labelled: each batch holds one (anchor, positive) pair per label — two same-label sessions of
  different users — and never two pairs of one label, so no in-batch negative shares the
  anchor's label (SetFit-style contrastive pairs without false negatives);
- self-supervised: two seeded random views of one session (a contiguous crop, events dropped),
  plus consecutive sessions of one user; a batch never holds one session twice.

Example:
    >>> from behavior_rag.synth import generate
    >>> pb = build_pairs(generate(60, seed=3).sessions, labelled=True, batch_size=4,
    ...                  max_pairs_per_label=4)
    >>> pb.mode, max(len(b) for b in pb.batches)
    ('labelled', 4)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Session


class PairBatches(BaseModel):
    """Rows of (anchor, positive) texts and the row indices of each batch, in training order."""

    mode: str
    anchors: list[str]
    positives: list[str]
    batches: list[list[int]]
    per_label: dict[str, int] = Field(default_factory=dict)
    view_pairs: int = 0
    consecutive_pairs: int = 0


def view(session: Session, rng: random.Random, crop: float, drop: float) -> Session:
    """A random view: a contiguous window of at least ``crop`` of the events, then each event
    dropped with probability ``drop`` (at least two events kept when there are two)."""
    ev = list(session.events)
    if len(ev) < 3:
        return session
    keep = max(2, min(len(ev), round(len(ev) * rng.uniform(crop, 1.0))))
    start = rng.randint(0, len(ev) - keep)
    window = ev[start: start + keep]
    kept = [e for e in window if rng.random() >= drop]
    if len(kept) < 2:
        kept = window[:2]
    return session.model_copy(update={"events": kept})


def build_pairs(sessions: Sequence[Session], *, labelled: bool, batch_size: int = 16,
                max_pairs_per_label: int = 64, max_pairs: int = 2000, crop: float = 0.6,
                drop: float = 0.15, seed: int = 0, settings: Settings | None = None
                ) -> PairBatches:
    """Rendered pairs and their batches (see the module doc). Deterministic given ``seed``."""
    if batch_size < 2:
        raise ConfigError("batch_size must be at least 2 (in-batch negatives)",
                          field="batch_size", value=batch_size)
    settings = settings or default_settings()
    rng = random.Random(seed)
    if labelled:
        return _labelled(sessions, rng, batch_size, max_pairs_per_label, settings)
    return _unlabelled(sessions, rng, batch_size, max_pairs, crop, drop, settings)


def _labelled(sessions: Sequence[Session], rng: random.Random, batch_size: int,
              per_label: int, settings: Settings) -> PairBatches:
    by_label: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        if s.label is not None:
            by_label[s.label].append(s)
    if len(by_label) < 2:
        raise ConfigError("labelled tuning needs sessions of at least two labels",
                          field="sessions.label", value=sorted(by_label))
    queues = {lab: _label_pairs(group, rng, per_label) for lab, group in sorted(by_label.items())}
    out = PairBatches(mode="labelled", anchors=[], positives=[], batches=[],
                      per_label={lab: len(q) for lab, q in queues.items()})
    texts: dict[str, str] = {}

    def text(s: Session) -> str:
        if s.session_id not in texts:
            texts[s.session_id] = render(s, settings=settings)
        return texts[s.session_id]

    for r in range(max(len(q) for q in queues.values())):
        # Round r takes pair r of every label that has one, split into batches of distinct labels.
        labels = [lab for lab, q in queues.items() if r < len(q)]
        rng.shuffle(labels)
        for i in range(0, len(labels), batch_size):
            group = labels[i: i + batch_size]
            if len(group) < 2:
                continue  # a lone pair has no negative to learn from
            rows = []
            for lab in group:
                a, p = queues[lab][r]
                rows.append(len(out.anchors))
                out.anchors.append(text(a))
                out.positives.append(text(p))
            out.batches.append(rows)
    return out


def _label_pairs(group: list[Session], rng: random.Random, n: int) -> list[tuple[Session, Session]]:
    """Up to ``n`` distinct pairs of sessions of different users (same user only if the label
    has one user: better a weak pair than none)."""
    users = {s.user_id for s in group}
    pairs, seen = [], set()
    for _ in range(n * 8):
        if len(pairs) >= n or len(group) < 2:
            break
        a, b = rng.sample(group, 2)
        if len(users) > 1 and a.user_id == b.user_id:
            continue
        key = tuple(sorted((a.session_id, b.session_id)))
        if key not in seen:
            seen.add(key)
            pairs.append((a, b))
    return pairs


def _unlabelled(sessions: Sequence[Session], rng: random.Random, batch_size: int,
                max_pairs: int, crop: float, drop: float, settings: Settings) -> PairBatches:
    rows: list[tuple[str, str, set[str]]] = []
    for s in sessions:
        a, b = view(s, rng, crop, drop), view(s, rng, crop, drop)
        rows.append((render(a, settings=settings), render(b, settings=settings),
                     {s.session_id}))
    n_views = len(rows)
    by_user: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        by_user[s.user_id].append(s)
    for user in sorted(by_user):
        seq = sorted(by_user[user], key=lambda s: (s.start is None, s.start, s.session_id))
        for a, b in zip(seq, seq[1:]):
            rows.append((render(a, settings=settings), render(b, settings=settings),
                         {a.session_id, b.session_id}))
    if len(rows) < 2:
        raise ConfigError("self-supervised tuning needs at least two sessions",
                          field="sessions", value=len(sessions))
    rng.shuffle(rows)
    rows = rows[:max_pairs]
    out = PairBatches(mode="self-supervised", anchors=[r[0] for r in rows],
                      positives=[r[1] for r in rows], batches=_disjoint_batches(
                          [r[2] for r in rows], batch_size),
                      view_pairs=n_views, consecutive_pairs=len(rows) - n_views)
    out.view_pairs = sum(1 for r in rows if len(r[2]) == 1)
    out.consecutive_pairs = len(rows) - out.view_pairs
    return out


def _disjoint_batches(keys: list[set[str]], batch_size: int) -> list[list[int]]:
    """Greedy batches of ``batch_size`` rows in which no session appears twice (a session in two
    rows would be its own in-batch negative)."""
    open_: list[tuple[list[int], set[str]]] = []
    done: list[list[int]] = []
    for i, k in enumerate(keys):
        for rows, used in open_:
            if not (used & k):
                rows.append(i)
                used |= k
                break
        else:
            open_.append(([i], set(k)))
        full = [b for b in open_ if len(b[0]) >= batch_size]
        done += [b[0] for b in full]
        open_ = [b for b in open_ if len(b[0]) < batch_size]
    done += [rows for rows, _ in open_ if len(rows) >= 2]
    return done
