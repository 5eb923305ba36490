"""The synthetic product catalog: 11 categories with invented brands, search nouns and prices.

Nothing here is real data. The catalog is seeded and reproducible.

Example:
    >>> cat = make_catalog(0, n_items_per_category=10)
    >>> len(cat.categories), len(cat.items)
    (11, 110)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from behavior_rag.errors import ConfigError, DataError


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


# Users' usual categories lean away from giftable ones, so gift sessions stand out.
USUAL_P = np.array([0.4 if s.giftable else 1.0 for s in _SPECS])
USUAL_P = USUAL_P / USUAL_P.sum()


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


def check_seed(seed: int) -> int:
    """``seed`` as an int; :class:`ConfigError` unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("seed must be a non-negative integer", field="seed", value=seed)
    return int(seed)


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
    rng = np.random.default_rng([check_seed(seed), 0xCA7])
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

