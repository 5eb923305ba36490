"""Guesses for a log we have not seen: which column is which field, the timestamp format and
resolution, and which source values are which event types. Only proposals: ``--inspect`` prints
them as a mapping the user checks and edits.

Example:
    >>> guess_fields(["SessionId", "ItemId", "Time"])
    {'session_id': 'SessionId', 'timestamp': 'Time', 'item_id': 'ItemId'}
    >>> guess_timestamp_format(["1659304800025", "1659304904511"])
    'unix_ms'
    >>> guess_type_map(["clicks", "carts", "orders", "view"])
    {'clicks': 'view', 'carts': 'cart', 'orders': 'purchase'}
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from behavior_rag.ingest.validate import parse_timestamp, resolution_of
from behavior_rag.types import EVENT_TYPES, TimeResolution

# Normalised column names (lowercase, letters and digits only) per field, best first.
NAMES: dict[str, tuple[str, ...]] = {
    "user_id": ("userid", "user", "uid", "customerid", "customer", "visitorid", "visitor",
                "clientid", "memberid", "shopperid", "custid"),
    "session_id": ("sessionid", "session", "usersession", "sid", "visitid", "sessionkey"),
    "timestamp": ("timestamp", "eventtime", "time", "ts", "datetime", "date", "eventdate",
                  "created", "createdat", "occurredat", "ts_ms"),
    "event_type": ("eventtype", "type", "event", "action", "behaviortype", "behaviourtype",
                   "behavior", "behaviour", "activity", "interaction"),
    "item_id": ("itemid", "item", "productid", "product", "sku", "aid", "articleid", "article",
                "pid", "goodsid"),
    "category": ("categorycode", "category", "categoryid", "cat", "catid", "categoryname"),
    "brand": ("brand", "brandname", "manufacturer", "vendor"),
    "price": ("price", "unitprice", "amount", "cost", "value", "revenue"),
    "query": ("query", "searchquery", "searchterm", "search", "keyword", "keywords", "q"),
}
TYPE_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("pv", "click", "clicks", "views", "pageview", "page_view", "detail",
                     "impression", "show", "visit"), "view"),
    **dict.fromkeys(("carts", "addtocart", "add_to_cart", "basket", "add", "atc"), "cart"),
    **dict.fromkeys(("buy", "order", "orders", "purchases", "transaction", "checkout", "sale",
                     "conversion"), "purchase"),
    **dict.fromkeys(("favorite", "favourite", "wishlist", "like", "save", "favs"), "fav"),
    **dict.fromkeys(("query", "searches"), "search"),
    **dict.fromkeys(("removefromcart", "remove", "remove_from_basket"), "remove_from_cart"),
}
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y")
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S%.f", "%d/%m/%Y %H:%M:%S",
                "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S")


def norm(name: str) -> str:
    """A column name reduced to lowercase letters and digits (``Session ID`` -> ``sessionid``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def guess_fields(columns: Sequence[str]) -> dict[str, str]:
    """Field -> column, by name: exact synonyms first (in field order), one column per field."""
    by_norm = {norm(c): c for c in reversed(columns)}
    out: dict[str, str] = {}
    for field, names in NAMES.items():
        hit = next((by_norm[n] for n in names if n in by_norm
                    and by_norm[n] not in out.values()), None)
        if hit is not None:
            out[field] = hit
    return out


def guess_timestamp_format(values: Sequence[str]) -> str | None:
    """The format that parses (nearly) all ``values``: unix_s/unix_ms by magnitude, then ISO
    8601, then common strftime patterns; None if nothing does."""
    vals = [v for v in values if v]
    if not vals:
        return None
    if all(re.fullmatch(r"\d+(\.\d+)?", v) for v in vals):
        if all(len(v.split(".")[0]) == 8 and v.startswith(("19", "20")) for v in vals):
            return "%Y%m%d"
        big = sum(float(v) >= 1e11 for v in vals) / len(vals)
        return "unix_ms" if big > 0.5 else "unix_s"
    for fmt in ("iso", *TIME_FORMATS, *DATE_FORMATS):
        if _parse_rate(vals, fmt) >= 0.95:
            return fmt
    return None


def guess_resolution(values: Sequence[str], fmt: str) -> TimeResolution | None:
    """The resolution of ``values`` read in ``fmt`` (see :func:`resolution_of`)."""
    ts = pl.DataFrame({"v": list(values)}, schema={"v": pl.Utf8}).select(
        parse_timestamp(pl.col("v"), fmt).alias("t"))["t"]
    return resolution_of(ts)


def guess_type_map(values: Sequence[str]) -> dict[str, str]:
    """Source value -> event type for the values we recognise (event types pass unmapped)."""
    out = {}
    for v in values:
        if v in EVENT_TYPES:
            continue
        key = v.strip().lower().replace(" ", "_").replace("-", "_")
        target = key if key in EVENT_TYPES else TYPE_SYNONYMS.get(key)
        if target:
            out[v] = target
    return out


def _parse_rate(vals: list[str], fmt: str) -> float:
    df = pl.DataFrame({"v": vals}, schema={"v": pl.Utf8})
    return df.select(parse_timestamp(pl.col("v"), fmt).is_not_null().mean())[0, 0]
