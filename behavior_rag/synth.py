"""Seeded generator of SYNTHETIC shopper sessions, for the demo and the tests.

Nothing here is real data: the catalog (categories, invented brands, prices) and the shoppers are
made up by a random number generator. Each session is produced by one of eight persona behaviour
models (see :mod:`behavior_rag.synth_personas`) and labelled with that persona, so labels are
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
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from behavior_rag.errors import ConfigError, DataError
from behavior_rag.synth_personas import UserState, plan_session, weighted_index, weighted_sample
from behavior_rag.types import Event, Session

PERSONAS: tuple[str, ...] = (
    "focused_buyer", "comparison_shopper", "deal_hunter", "window_shopper",
    "cart_abandoner", "impulse_buyer", "loyal_repeat_buyer", "gift_shopper",
)

DEFAULT_START = datetime(2024, 11, 1, tzinfo=timezone.utc)


class _Spec(NamedTuple):
    code: str
    typical_price: float  # median list price of the category
    sigma: float  # lognormal spread of prices within the category
    giftable: bool
    nouns: tuple[str, ...]
    brands: tuple[str, ...]  # invented; listed most popular first


_SPECS: tuple[_Spec, ...] = (
    _Spec("electronics.smartphone", 420, 0.45, False, ("smartphone", "phone", "5g phone"),
          ("Voltera", "Nexio", "Pulsar", "Kairo", "Zentek", "Orbix")),
    _Spec("electronics.headphones", 85, 0.6, True, ("headphones", "earbuds", "wireless earbuds"),
          ("Sonique", "Aurel", "Bassline", "Quietwave", "Echofi")),
    _Spec("apparel.shoes", 80, 0.45, False, ("running shoes", "sneakers", "boots"),
          ("Stridewell", "Kinetiq", "Marlow Finch", "Trailform", "Velocity Lane", "Pebbleton")),
    _Spec("apparel.jackets", 110, 0.5, False, ("jacket", "rain jacket", "puffer coat"),
          ("Northloom", "Fieldcraft", "Urban Drift", "Alpine Thread")),
    _Spec("home.kitchen", 40, 0.7, False, ("blender", "frying pan", "knife set", "coffee maker"),
          ("Copperleaf", "Hearthly", "Culina", "Brava Home", "Stovetop Co")),
    _Spec("toys.games", 28, 0.6, True, ("board game", "puzzle", "lego set", "card game"),
          ("Playwright", "Tinker Bay", "Puzzlewick", "Jumbo Otter", "Brightblock")),
    _Spec("beauty.skincare", 26, 0.5, True, ("moisturizer", "serum", "face cream", "sunscreen"),
          ("Luminelle", "Derma Pure", "Rosehaven", "Glowlab", "Nordic Dew", "Velvane", "Oat & Co")),
    _Spec("jewelry.necklace", 120, 0.8, True, ("necklace", "pendant", "gold chain"),
          ("Aurelia", "Silverleaf", "Opaline", "Maison Corvel")),
    _Spec("books.fiction", 14, 0.3, True, ("novel", "fantasy book", "thriller", "book box set"),
          ("Inkwell Press", "Lantern Books", "Paperfox", "Northgate", "Quillmark")),
    _Spec("sports.fitness", 50, 0.7, False, ("yoga mat", "dumbbells", "resistance bands"),
          ("Ironpeak", "Flexion", "Summit Gear", "Coreline", "Pacer", "Tempo Athletics")),
    _Spec("grocery.snacks", 6, 0.4, False, ("protein bar", "chips", "trail mix", "chocolate"),
          ("Crunchwell", "Munchbox", "Golden Acre", "Snackory")),
)

# Typical session start hour (UTC, mean and spread) per persona; 30% of sessions ignore it.
_HOURS: dict[str, tuple[float, float]] = {
    "focused_buyer": (13.0, 3.0), "comparison_shopper": (20.5, 2.0), "deal_hunter": (9.0, 3.0),
    "window_shopper": (22.0, 2.5), "cart_abandoner": (21.0, 2.5), "impulse_buyer": (23.5, 1.5),
    "loyal_repeat_buyer": (8.0, 2.0), "gift_shopper": (19.0, 2.5),
}

# Users' usual categories lean away from giftable ones, so gift sessions stand out.
_USUAL_P = np.array([0.4 if s.giftable else 1.0 for s in _SPECS])
_USUAL_P = _USUAL_P / _USUAL_P.sum()


class CategoryInfo(BaseModel):
    """One catalog category: a dotted code, its brands, search nouns and typical price."""

    model_config = ConfigDict(frozen=True)

    code: str
    brands: list[str]
    nouns: list[str] = Field(description="Product words used in synthetic search queries.")
    typical_price: float
    giftable: bool


class CatalogItem(BaseModel):
    """One product. ``price`` is what a shopper pays now; ``discount`` the markdown already in it
    (0, or 0.1-0.5 off the list price)."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    category: str
    brand: str
    price: float
    discount: float = 0.0


class Catalog(BaseModel):
    """A synthetic product catalog. Build one with :func:`make_catalog`.

    Example:
        >>> cat = make_catalog(0, n_items_per_category=10)
        >>> len(cat.items), cat.items_in("books.fiction")[0].category
        (110, 'books.fiction')
    """

    categories: list[CategoryInfo]
    items: list[CatalogItem]

    # Column arrays for the persona scripts: rebuilt from ``items``, never serialised.
    _cols: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)
    _rows: list[np.ndarray] = PrivateAttr(default_factory=list)
    _cum_pop: list[np.ndarray] = PrivateAttr(default_factory=list)
    _by_id: dict[str, int] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        code_idx = {c.code: i for i, c in enumerate(self.categories)}
        cat_idx = np.array([code_idx[it.category] for it in self.items], dtype=np.int64)
        brand_idx = np.array([self.categories[c].brands.index(it.brand)
                              for c, it in zip(cat_idx, self.items)], dtype=np.int64)
        price = np.array([it.price for it in self.items], dtype=float)
        typical = np.array([c.typical_price for c in self.categories])
        self._cols = {
            "cat_idx": cat_idx, "brand_idx": brand_idx, "price": price,
            "discount": np.array([it.discount for it in self.items], dtype=float),
            "rel_price": price / typical[cat_idx] if len(price) else price,
            # Zipf-like brand popularity: the first brands listed sell most.
            "popularity": 1.0 / (brand_idx + 1.0) ** 0.7,
        }
        self._rows = [np.flatnonzero(cat_idx == c) for c in range(len(self.categories))]
        self._cum_pop = [np.cumsum(self._cols["popularity"][r]) for r in self._rows]
        self._by_id = {it.item_id: i for i, it in enumerate(self.items)}

    # Row-level accessors used by synth_personas.
    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def cat_idx(self) -> np.ndarray:
        return self._cols["cat_idx"]

    @property
    def brand_idx(self) -> np.ndarray:
        """Index of each item's brand in its category's ``brands`` list."""
        return self._cols["brand_idx"]

    @property
    def price(self) -> np.ndarray:
        return self._cols["price"]

    @property
    def discount(self) -> np.ndarray:
        return self._cols["discount"]

    @property
    def rel_price(self) -> np.ndarray:
        """Price over the category's typical price: < 1 is cheap for its category."""
        return self._cols["rel_price"]

    @property
    def popularity(self) -> np.ndarray:
        return self._cols["popularity"]

    def rows_in(self, c: int) -> np.ndarray:
        return self._rows[c]

    def popularity_cum(self, c: int) -> np.ndarray:
        """Cumulative popularity over ``rows_in(c)``, for fast weighted picks."""
        return self._cum_pop[c]

    def brand_of(self, row: int) -> str:
        return self.items[row].brand

    def items_in(self, category: str) -> list[CatalogItem]:
        """Items of one category code, e.g. ``"toys.games"`` (empty list if unknown)."""
        return [it for it in self.items if it.category == category]

    def item(self, item_id: str) -> CatalogItem:
        """The item with ``item_id``; :class:`DataError` if there is none."""
        if item_id not in self._by_id:
            raise DataError("no such item in the synthetic catalog", field="item_id",
                            value=item_id)
        return self.items[self._by_id[item_id]]


def make_catalog(seed: int = 0, *, n_items_per_category: int = 40) -> Catalog:
    """A synthetic catalog of 11 categories with invented brands, seeded and reproducible.

    Prices are lognormal around each category's typical price, times a per-brand premium;
    about a quarter of items carry a 10-50% discount.

    Example:
        >>> make_catalog(1).model_dump() == make_catalog(1).model_dump()
        True
    """
    if n_items_per_category < 1:
        raise ConfigError("n_items_per_category must be >= 1", value=n_items_per_category)
    rng = np.random.default_rng([_check_seed(seed), 0xCA7])
    n = n_items_per_category
    ids = np.sort(rng.choice(900_000, size=n * len(_SPECS), replace=False) + 100_000)
    categories, items = [], []
    for ci, spec in enumerate(_SPECS):
        premium = rng.lognormal(0.0, 0.25, size=len(spec.brands))
        pop = 1.0 / np.arange(1, len(spec.brands) + 1) ** 0.7
        brands = rng.choice(len(spec.brands), size=n, p=pop / pop.sum())
        list_price = spec.typical_price * premium[brands] * rng.lognormal(0.0, spec.sigma, n)
        discounted = rng.random(n) < 0.25
        discount = np.where(discounted, rng.integers(2, 11, size=n) * 0.05, 0.0)
        price = np.maximum(0.99, np.round(list_price * (1 - discount), 2))
        categories.append(CategoryInfo(code=spec.code, brands=list(spec.brands),
                                       nouns=list(spec.nouns), typical_price=spec.typical_price,
                                       giftable=spec.giftable))
        for j in range(n):
            items.append(CatalogItem(item_id=str(ids[ci * n + j]), category=spec.code,
                                     brand=spec.brands[brands[j]], price=float(price[j]),
                                     discount=round(float(discount[j]), 2)))
    return Catalog(categories=categories, items=items)


class SynthDataset(BaseModel):
    """The output of :func:`generate`: the catalog, labelled sessions, and how they were made."""

    catalog: Catalog
    sessions: list[Session]
    seed: int
    mix: dict[str, float] = Field(description="Persona -> share of sessions (sums to 1).")


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("seed must be a non-negative integer", field="seed", value=seed)
    return int(seed)


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
                  primaries: np.ndarray) -> tuple[np.ndarray, list[UserState]]:
    """Create users and give each session (by label) an owner.

    About 80% of a label's sessions go to users whose primary persona it is; the rest to anyone.
    Activity (lognormal) makes some users much busier than others.
    """
    n_users = len(primaries)
    activity = rng.lognormal(0.0, 0.6, size=n_users)
    users, brand_idx = [], catalog.brand_idx
    for u, prim in enumerate(primaries):
        usual = weighted_sample(rng, _USUAL_P, int(rng.integers(2, 4)))
        rows = catalog.rows_in(usual[0])
        fav_brand = brand_idx[rows[int(rng.random() * len(rows))]]
        users.append(UserState(user_id=f"synth_u{u + 1:05d}", primary=PERSONAS[prim], usual=usual,
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
             days: int = 30) -> SynthDataset:
    """Generate ``n_sessions`` synthetic labelled sessions.

    ``mix`` maps persona -> weight (default: uniform over :data:`PERSONAS`); session counts per
    label follow it exactly up to rounding. Each user has a primary persona that about 80% of
    their sessions follow. Sessions start within ``days`` days from ``start`` (a user's sessions
    are kept two hours apart, which can push a rare one slightly past the end). They are ordered
    by start time; ids are ``synth_s000001``...

    Example:
        >>> ds = generate(16, seed=1)
        >>> [sum(s.label == p for s in ds.sessions) for p in PERSONAS]
        [2, 2, 2, 2, 2, 2, 2, 2]
    """
    seed = _check_seed(seed)
    if isinstance(n_sessions, bool) or not isinstance(n_sessions, int) or n_sessions < 0:
        raise ConfigError("n_sessions must be an integer >= 0", field="n_sessions",
                          value=n_sessions)
    if not sessions_per_user >= 1.0:
        raise ConfigError("sessions_per_user must be >= 1", field="sessions_per_user",
                          value=sessions_per_user)
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
    owner, users = _assign_users(rng, catalog, labels, primaries)
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
    sid = {s: f"synth_s{i + 1:06d}" for i, s in enumerate(order)}
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

