"""Behaviour models of the eight synthetic shopper personas (used by :func:`behavior_rag.synth.generate`).

Each persona is a small script that, given a user's state and a catalog, plans one session as a
list of :class:`Action` s. Timestamps are added later by the generator from each action's median
``gap`` (seconds to the next event) with lognormal jitter. The data is synthetic: these scripts
are plausible caricatures written for demos and tests, not models fitted to real shoppers.

Signals deliberately overlap (several personas buy, several search, all get stray views), so a
classifier has to read the whole session rather than one event type.

Example:
    >>> import numpy as np
    >>> from behavior_rag.synth import make_catalog
    >>> cat = make_catalog(0)
    >>> user = UserState(user_id="u", primary="window_shopper", usual=[0, 1], fav_brand_items=[0])
    >>> acts = plan_session("window_shopper", np.random.default_rng(0), cat, user)
    >>> {a.kind for a in acts} <= {"view", "search", "fav"}
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from behavior_rag.synth.catalog import Catalog

PERSONAS: tuple[str, ...] = (
    "focused_buyer", "comparison_shopper", "deal_hunter", "window_shopper",
    "cart_abandoner", "impulse_buyer", "loyal_repeat_buyer", "gift_shopper",
)


class Action(NamedTuple):
    """One planned event: ``item`` is a catalog row index (-1 for searches)."""

    kind: str
    item: int = -1
    query: str | None = None
    gap: float = 10.0  # median seconds until the next event


@dataclass
class UserState:
    """What a synthetic user carries across sessions."""

    user_id: str
    primary: str
    usual: list[int]  # category indices the user normally shops in
    fav_brand_items: list[int]  # catalog rows of the user's favourite brand
    bought: list[int] = field(default_factory=list)


# Median seconds spent on an item page, per persona. Jitter (lognormal) makes them overlap.
VIEW_DWELL: dict[str, float] = {
    "focused_buyer": 22, "comparison_shopper": 65, "deal_hunter": 25, "window_shopper": 11,
    "cart_abandoner": 35, "impulse_buyer": 14, "loyal_repeat_buyer": 18, "gift_shopper": 45,
}

GIFT_QUERIES = ("gift for her", "gift for him", "birthday present kids", "christmas gift ideas",
                "gifts under 50", "present for mom", "anniversary gift", "gift for dad",
                "secret santa gift", "{noun} gift")
DEAL_QUERIES = ("sale", "deals", "clearance", "cheap {noun}", "discount {noun}", "{noun} sale",
                "{brand} discount", "{noun} on sale", "black friday {noun}")


def weighted_index(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn with probability proportional to ``weights`` (one uniform draw)."""
    cum = np.cumsum(weights)
    return min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(cum) - 1)


def weighted_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` distinct indices with weight > 0, drawn without replacement by weight."""
    k = min(k, int((weights > 0).sum()))
    # Efraimidis-Spirakis keys u**(1/w): much faster than Generator.choice(replace=False, p=...)
    # on these tiny arrays, and still exact.
    keys = np.where(weights > 0, rng.random(len(weights)) ** (1.0 / np.maximum(weights, 1e-12)),
                    -1.0)
    return [int(i) for i in np.argsort(-keys, kind="stable")[:k]]


class _Planner:
    """Shared helpers: item picks and action appends for one session."""

    def __init__(self, persona: str, rng: np.random.Generator, cat: Catalog, user: UserState):
        self.rng, self.cat, self.user = rng, cat, user
        self.dwell = VIEW_DWELL[persona]
        self.acts: list[Action] = []
        # Plain references: column lookups on the pydantic catalog are slow in hot loops.
        self.popularity, self.price = cat.popularity, cat.price
        self.discount, self.rel_price, self.brand_idx = cat.discount, cat.rel_price, cat.brand_idx

    # -- choices ------------------------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def index(self, n: int) -> int:
        """Uniform in ``range(n)``; scalar ``Generator.integers`` is several times slower."""
        return int(self.rng.random() * n)

    def randint(self, lo: int, hi: int) -> int:
        """Uniform in ``lo..hi`` inclusive."""
        return lo + self.index(hi - lo + 1)

    def categories(self, k: int, *, prefer: list[int] | None = None, exclude=()) -> list[int]:
        """``k`` distinct category indices, weighted towards ``prefer``."""
        w = np.ones(self.cat.n_categories)
        if prefer:
            w[prefer] += 6.0
        w[list(exclude)] = 0.0
        return weighted_sample(self.rng, w, k)

    def pick(self, rows: np.ndarray, weights: np.ndarray | None = None) -> int:
        """One catalog row from ``rows``; popular brands by default."""
        w = self.popularity[rows] if weights is None else weights
        return int(rows[weighted_index(self.rng, w)])

    def pick_in(self, c: int) -> int:
        """A popular item of category ``c`` (cumulative weights are cached on the catalog)."""
        rows, cum = self.cat.rows_in(c), self.cat.popularity_cum(c)
        i = int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right"))
        return int(rows[min(i, len(rows) - 1)])

    def noun(self, c: int) -> str:
        nouns = self.cat.categories[c].nouns
        return nouns[self.index(len(nouns))]

    def template(self, options: tuple[str, ...], c: int) -> str:
        t = options[self.index(len(options))]
        brands = self.cat.categories[c].brands
        brand = brands[self.index(len(brands))].lower()
        return t.format(noun=self.noun(c), brand=brand)

    # -- actions ------------------------------------------------------------------------------
    def search(self, query: str) -> None:
        self.acts.append(Action("search", -1, query, 9.0))

    def view(self, item: int, scale: float = 1.0) -> None:
        self.acts.append(Action("view", item, None, self.dwell * scale))

    def add(self, kind: str, item: int, gap: float) -> None:
        self.acts.append(Action(kind, item, None, gap))


def _focused(p: _Planner) -> None:
    c = p.categories(1, prefer=p.user.usual)[0]
    target = p.pick_in(c)
    if p.chance(0.7):  # specific query: the brand and the product
        p.search(f"{p.cat.brand_of(target).lower()} {p.noun(c)}")
    for _ in range(p.randint(0, 2)):
        p.view(p.pick_in(c))
    p.view(target)
    p.add("cart", target, 45.0)  # checkout follows quickly
    if p.chance(0.92):
        p.add("purchase", target, 20.0)


def _comparison(p: _Planner) -> None:
    cats = p.categories(1 if p.chance(0.7) else 2, prefer=p.user.usual)
    candidates: list[int] = []
    for c in cats:
        rows = p.cat.rows_in(c)
        brands = p.cat.categories[c].brands
        for b in p.rng.permutation(len(brands))[:p.randint(3, 5)]:
            of_brand = rows[p.brand_idx[rows] == b]
            if len(of_brand):
                candidates.append(p.pick(of_brand))
    for _ in range(p.randint(0, 2)):
        c = cats[p.index(len(cats))]
        p.search(p.template(("best {noun}", "{noun} reviews", "{brand} {noun}", "{noun} vs"), c))
    order = [int(i) for i in p.rng.permutation(candidates)]
    # Later views return to favourites: a skewed preference produces repeat views.
    pref = 1.0 / np.arange(1, len(candidates) + 1) ** 1.2
    order += [candidates[i] for i in p.rng.choice(len(candidates), size=p.randint(4, 10),
                                                  p=pref / pref.sum())]
    faved: set[int] = set()
    for item in order:
        p.view(item)
        if item not in faved and p.chance(0.15):
            p.add("fav", item, 6.0)
            faved.add(item)
    best = candidates[0]
    if p.chance(0.45):
        p.view(best)
        p.add("cart", best, 60.0)
        p.add("purchase", best, 20.0)
    elif p.chance(0.1):
        p.add("cart", best, 20.0)


def _deal(p: _Planner) -> None:
    cats = p.categories(p.randint(3, 5))
    p.search(p.template(DEAL_QUERIES, cats[0]))
    viewed: list[int] = []
    for i, c in enumerate(cats):
        if i and p.chance(0.4):
            p.search(p.template(DEAL_QUERIES, c))
        rows = p.cat.rows_in(c)
        # Discounted and cheap-for-the-category items are far more attractive.
        w = (1.0 + 5.0 * (p.discount[rows] > 0)) / p.rel_price[rows] ** 2
        for _ in range(p.randint(1, 3)):
            item = p.pick(rows, w)
            p.view(item)
            viewed.append(item)
    cheap = sorted(set(viewed), key=lambda r: p.price[r])[:p.randint(1, 3)]
    for item in cheap:
        p.add("cart", item, 15.0)
    if p.chance(0.75):
        for item in cheap[:p.randint(1, len(cheap))]:
            p.add("purchase", item, 10.0)


def _window(p: _Planner) -> None:
    cats = p.categories(p.randint(3, 6))
    if p.chance(0.15):
        p.search(p.template(("new arrivals", "trending {noun}", "{noun}", "{brand}"), cats[0]))
    for _ in range(p.randint(5, 13)):
        item = p.pick_in(cats[p.index(len(cats))])
        p.view(item)
        if p.chance(0.04):
            p.add("fav", item, 5.0)


def _abandoner(p: _Planner) -> None:
    cats = p.categories(p.randint(1, 3), prefer=p.user.usual)
    if p.chance(0.5):
        p.search(p.template(("{noun}", "{brand} {noun}", "{noun} for women", "{noun} for men"),
                            cats[0]))
    viewed = [p.pick_in(cats[p.index(len(cats))]) for _ in range(p.randint(3, 8))]
    to_cart = set(p.rng.permutation(len(viewed))[:p.randint(1, 3)].tolist())
    carted: list[int] = []
    for i, item in enumerate(viewed):
        p.view(item)
        if i in to_cart and item not in carted:
            p.add("cart", item, 25.0)
            carted.append(item)
    if p.chance(0.3):
        p.add("remove_from_cart", carted[p.index(len(carted))], 15.0)
    for _ in range(p.randint(0, 2) if p.chance(0.5) else 0):
        p.view(p.pick_in(cats[0]))


def _impulse(p: _Planner) -> None:
    browse = p.categories(1)[0]
    for _ in range(p.randint(1, 3)):
        p.view(p.pick_in(browse), scale=0.8)
    other = p.categories(1, exclude=[browse])[0]  # the buy is unrelated to the browsing
    rows = p.cat.rows_in(other)
    item = p.pick(rows, p.popularity[rows] / p.rel_price[rows])
    p.view(item, scale=1.3)
    if p.chance(0.7):  # otherwise "buy now", straight from the item page
        p.add("cart", item, 20.0)
    p.add("purchase", item, 15.0)


def _loyal(p: _Planner) -> None:
    fav = np.asarray(p.user.fav_brand_items)
    brand = p.cat.brand_of(int(fav[0]))
    fav_set = set(fav.tolist())
    history = [b for b in p.user.bought if b in fav_set] or p.user.bought
    if history and p.chance(0.65):  # reorder something bought before
        item = history[p.index(len(history))]
        if p.chance(0.6):
            p.view(item, scale=0.7)
        buy = [item]
        if p.chance(0.3):
            extra = p.pick(fav)
            p.view(extra)
            buy.append(extra)
    else:
        if p.chance(0.5):
            c = int(p.cat.cat_idx[fav[0]])
            p.search(brand.lower() if p.chance(0.5) else f"{brand.lower()} {p.noun(c)}")
        seen = [p.pick(fav) for _ in range(p.randint(1, 4))]
        for item in seen:
            p.view(item)
        buy = list(dict.fromkeys(seen[-p.randint(1, 2):]))
    for item in buy:
        p.add("cart", item, 12.0)
    if p.chance(0.9):
        for item in buy:
            p.add("purchase", item, 10.0)


def _gift(p: _Planner) -> None:
    giftable = [i for i, c in enumerate(p.cat.categories) if c.giftable]
    unusual = [c for c in giftable if c not in p.user.usual] or giftable
    cats = [unusual[i] for i in p.rng.permutation(len(unusual))[:p.randint(1, 2)].tolist()]
    viewed: list[int] = []
    for i, c in enumerate(cats):
        if i == 0 or p.chance(0.5):
            p.search(p.template(GIFT_QUERIES, c))
        rows = p.cat.rows_in(c)
        w = p.popularity[rows] * p.rel_price[rows] ** 1.5  # gifts skew upmarket
        for _ in range(p.randint(2, 5)):
            item = p.pick(rows, w)
            p.view(item)
            viewed.append(item)
    if p.chance(0.2):
        p.add("fav", viewed[-1], 6.0)
    if p.chance(0.85):
        choice = max(viewed, key=lambda r: p.price[r])
        p.add("cart", choice, 40.0)
        p.add("purchase", choice, 20.0)


SCRIPTS: dict[str, Callable[[_Planner], None]] = {
    "focused_buyer": _focused, "comparison_shopper": _comparison, "deal_hunter": _deal,
    "window_shopper": _window, "cart_abandoner": _abandoner, "impulse_buyer": _impulse,
    "loyal_repeat_buyer": _loyal, "gift_shopper": _gift,
}


def _add_noise(p: _Planner) -> None:
    """Noise shared by every persona: stray views anywhere and the odd fav.

    Only views and favs are added, so the persona-defining carts, purchases and searches stay
    as planned while no single event type can decide the label.
    """
    for _ in range(int(p.rng.poisson(0.6))):
        item = p.pick_in(p.index(p.cat.n_categories))
        p.acts.insert(p.index(len(p.acts) + 1), Action("view", item, None, p.dwell * 0.7))
    views = [i for i, a in enumerate(p.acts) if a.kind == "view"]
    if views and p.chance(0.08):
        i = views[p.index(len(views))]
        p.acts.insert(i + 1, Action("fav", p.acts[i].item, None, 5.0))


def plan_session(persona: str, rng: np.random.Generator, catalog: Catalog,
                 user: UserState) -> list[Action]:
    """Plan one session of ``persona`` for ``user``; records the user's purchases."""
    p = _Planner(persona, rng, catalog, user)
    SCRIPTS[persona](p)
    _add_noise(p)
    user.bought.extend(a.item for a in p.acts if a.kind == "purchase")
    return p.acts
