"""Seeded generator of SYNTHETIC shopper sessions, for the demo and the tests.

Nothing here is real data: the catalog (categories, invented brands, prices) and the shoppers are
made up by a random number generator. Each session is produced by one of eight persona behaviour
models (see :mod:`behavior_rag.synth.personas`) and labelled with that persona, so labels are
known by construction. Personas overlap on purpose (several buy, all get stray views and jittered
dwell times), so a classifier must read the whole session.

Everything is driven by a ``numpy.random.Generator`` built from ``seed``: the same arguments give
identical output, and no global random state is touched.

Example:
    >>> ds = generate(40, seed=7, mix={"deal_hunter": 3, "window_shopper": 1})
    >>> sorted({s.label for s in ds.sessions}), sum(s.label == "deal_hunter" for s in ds.sessions)
    (['deal_hunter', 'window_shopper'], 30)
    >>> ds.sessions[0].session_id, ds.sessions[0].source
    ('synth_s000001', 'synth')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from numbers import Real

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError
from behavior_rag.synth.catalog import USUAL_P, Catalog, check_seed, make_catalog
from behavior_rag.synth.personas import (
    PERSONAS,
    UserState,
    plan_session,
    weighted_index,
    weighted_sample,
)
from behavior_rag.types import Event, Session

DEFAULT_START = datetime(2024, 11, 1, tzinfo=timezone.utc)

# Typical session start hour (UTC, mean and spread) per persona; 30% of sessions ignore it.
_HOURS: dict[str, tuple[float, float]] = {
    "focused_buyer": (13.0, 3.0), "comparison_shopper": (20.5, 2.0), "deal_hunter": (9.0, 3.0),
    "window_shopper": (22.0, 2.5), "cart_abandoner": (21.0, 2.5), "impulse_buyer": (23.5, 1.5),
    "loyal_repeat_buyer": (8.0, 2.0), "gift_shopper": (19.0, 2.5),
}



class SynthDataset(BaseModel):
    """The output of :func:`generate`: the catalog, labelled sessions, and how they were made."""

    catalog: Catalog
    sessions: list[Session]
    seed: int
    mix: dict[str, float] = Field(description="Persona -> share of sessions (sums to 1).")


def _normalise_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    if mix is None:
        return {p: 1.0 / len(PERSONAS) for p in PERSONAS}
    for name, w in mix.items():
        if name not in PERSONAS:
            raise ConfigError(f"unknown persona {name!r} in mix", field="mix", value=name,
                              known=list(PERSONAS))
        if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"mix weight for {name!r} must be a finite number >= 0",
                              field=f"mix.{name}", value=w)
    total = float(sum(mix.values()))
    if total <= 0:
        raise ConfigError("mix weights must sum to more than 0", field="mix", value=dict(mix))
    return {p: float(mix.get(p, 0.0)) / total for p in PERSONAS}


def _apportion(n: int, weights: list[float]) -> list[int]:
    """Largest-remainder apportionment: counts sum to ``n`` and differ from n*w by < 1."""
    quotas = [n * w for w in weights]
    counts = [math.floor(q) for q in quotas]
    # Ties go to the earlier persona, which keeps the result deterministic.
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _start_time(persona: str, rng: np.random.Generator, start: datetime, days: int) -> datetime:
    # Gift shopping piles up towards the end of the range (the run-up to the holidays).
    frac = rng.beta(2.0, 1.0) if persona == "gift_shopper" else rng.random()
    day = min(days - 1, int(frac * days))
    mean, sd = _HOURS[persona]
    hour = rng.uniform(7.0, 24.0) if rng.random() < 0.3 else rng.normal(mean, sd)
    return start + timedelta(days=day, seconds=int((hour % 24.0) * 3600))


def _events(acts, rng: np.random.Generator, cat: Catalog, user_id: str, session_id: str,
            t0: datetime) -> list[Event]:
    gaps = np.maximum(1.0, np.round(np.array([a.gap for a in acts]) *
                                    rng.lognormal(0.0, 0.55, size=len(acts))))
    offsets = np.concatenate(([0.0], np.cumsum(gaps)[:-1]))
    out = []
    for a, off in zip(acts, offsets):
        ts = t0 + timedelta(seconds=float(off))
        if a.item < 0:
            out.append(Event(user_id=user_id, session_id=session_id, timestamp=ts, type=a.kind,
                             query=a.query))
            continue
        it = cat.items[a.item]
        out.append(Event(user_id=user_id, session_id=session_id, timestamp=ts, type=a.kind,
                         item_id=it.item_id, category=it.category, brand=it.brand,
                         price=it.price, attrs={"discount": it.discount} if it.discount else {}))
    return out


def _assign_users(rng: np.random.Generator, catalog: Catalog, labels: np.ndarray,
                  primaries: np.ndarray, prefix: str) -> tuple[np.ndarray, list[UserState]]:
    """Create users and give each session (by label) an owner.

    About 80% of a label's sessions go to users whose primary persona it is; the rest to anyone.
    Activity (lognormal) makes some users much busier than others.
    """
    n_users = len(primaries)
    activity = rng.lognormal(0.0, 0.6, size=n_users)
    users, brand_idx = [], catalog.brand_idx
    for u, prim in enumerate(primaries):
        usual = weighted_sample(rng, USUAL_P, int(rng.integers(2, 4)))
        rows = catalog.rows_in(usual[0])
        fav_brand = brand_idx[rows[int(rng.random() * len(rows))]]
        users.append(UserState(user_id=f"{prefix}_u{u + 1:05d}", primary=PERSONAS[prim], usual=usual,
                               fav_brand_items=rows[brand_idx[rows] == fav_brand].tolist()))
    by_primary = [np.flatnonzero(primaries == k) for k in range(len(PERSONAS))]
    owner = np.empty(len(labels), dtype=np.int64)
    everyone = np.arange(n_users)
    for s, k in enumerate(labels):
        pool = by_primary[k] if len(by_primary[k]) and rng.random() < 0.8 else everyone
        owner[s] = pool[weighted_index(rng, activity[pool])]
    return owner, users


def generate(n_sessions: int = 1000, *, seed: int = 0, mix: Mapping[str, float] | None = None,
             sessions_per_user: float = 4.0, start: datetime | None = None,
             days: int = 30, prefix: str = "synth") -> SynthDataset:
    """Generate ``n_sessions`` synthetic labelled sessions.

    ``mix`` maps persona -> weight (default: uniform over :data:`PERSONAS`); session counts per
    label follow it exactly up to rounding. Each user has a primary persona that about 80% of
    their sessions follow. Sessions start within ``days`` days from ``start`` (a user's sessions
    are kept two hours apart, which can push a rare one slightly past the end). They are ordered
    by start time; ids are ``synth_s000001``... (``prefix`` replaces ``synth``: datasets
    generated with different prefixes can share an index).

    Example:
        >>> ds = generate(16, seed=1)
        >>> [sum(s.label == p for s in ds.sessions) for p in PERSONAS]
        [2, 2, 2, 2, 2, 2, 2, 2]
    """
    seed = check_seed(seed)
    if isinstance(n_sessions, bool) or not isinstance(n_sessions, int) or n_sessions < 0:
        raise ConfigError("n_sessions must be an integer >= 0", field="n_sessions",
                          value=n_sessions)
    if not sessions_per_user >= 1.0:
        raise ConfigError("sessions_per_user must be >= 1", field="sessions_per_user",
                          value=sessions_per_user)
    if not prefix or not prefix.replace("_", "").replace("-", "").isalnum():
        raise ConfigError("prefix must be letters, digits, '-' or '_'", field="prefix",
                          value=prefix)
    if days < 1:
        raise ConfigError("days must be >= 1", field="days", value=days)
    start = DEFAULT_START if start is None else start
    start = start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start
    weights = _normalise_mix(mix)
    catalog = make_catalog(seed)
    rng = np.random.default_rng([seed, 1])

    w = [weights[p] for p in PERSONAS]
    labels = np.repeat(np.arange(len(PERSONAS)), _apportion(n_sessions, w))
    rng.shuffle(labels)

    # Users' primary personas follow the mix too.
    n_users = max(1, round(n_sessions / sessions_per_user))
    primaries = np.repeat(np.arange(len(PERSONAS)), _apportion(n_users, w))
    rng.shuffle(primaries)
    owner, users = _assign_users(rng, catalog, labels, primaries, prefix)
    starts = [_start_time(PERSONAS[k], rng, start, days) for k in labels]
    # A user's sessions are at least two hours apart, so they never overlap in time.
    per_user: dict[int, list[int]] = {}
    for s in range(n_sessions):
        per_user.setdefault(int(owner[s]), []).append(s)
    for mine in per_user.values():
        mine.sort(key=lambda s: (starts[s], s))
        for prev, cur in zip(mine, mine[1:]):
            starts[cur] = max(starts[cur], starts[prev] + timedelta(hours=2))

    order = sorted(range(n_sessions), key=lambda s: (starts[s], s))
    sid = {s: f"{prefix}_s{i + 1:06d}" for i, s in enumerate(order)}
    sessions: dict[int, Session] = {}
    # Plan each user's sessions in time order: loyal buyers reorder what they bought before.
    for s in sorted(range(n_sessions), key=lambda s: (owner[s], starts[s], s)):
        user, persona = users[owner[s]], PERSONAS[labels[s]]
        acts = plan_session(persona, rng, catalog, user)
        events = _events(acts, rng, catalog, user.user_id, sid[s], starts[s])
        sessions[s] = Session(session_id=sid[s], user_id=user.user_id, events=events,
                              label=persona, source="synth")
    return SynthDataset(catalog=catalog, sessions=[sessions[s] for s in order], seed=seed,
                        mix=weights)

