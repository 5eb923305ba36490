"""Input bounds, in one place: ingest, the Python API and the HTTP service all build events and
sessions through :mod:`behavior_rag.types`, whose validators apply these, so a value refused
in one entry point is refused in all (each a clear error naming the field).

Why these numbers: ids of real shops (UUIDs, SKUs, hashes) are far below 256 characters; a
search query over 1,000 characters is pasted text, not a query; a session of more than 20,000
events is a crawler; years outside 1970..2100 are unit mix-ups (ms read as s) or garbage.

Example:
    >>> check_attrs({"colour": "red"}, "attrs")
    {'colour': 'red'}
"""

from __future__ import annotations

from typing import Any

MAX_ID = 256  # session, user, item, category, brand ids and labels
MAX_QUERY = 1_000
MAX_ATTR_TEXT = 2_000  # a string value of attrs / aggregates
MAX_ATTRS = 64  # keys per event (or per session's aggregates)
MAX_SPLIT = 64
MAX_EVENTS = 20_000  # per session
MIN_YEAR, MAX_YEAR = 1970, 2100
MAX_PRICE = 1e15


def check_attrs(attrs: dict[str, Any], field: str) -> dict[str, Any]:
    """``attrs`` if within bounds, else ValueError naming what is too big."""
    if len(attrs) > MAX_ATTRS:
        raise ValueError(f"{field} has {len(attrs)} keys; at most {MAX_ATTRS}")
    for k, v in attrs.items():
        if len(k) > MAX_ID:
            raise ValueError(f"{field} key of {len(k)} characters; at most {MAX_ID}")
        if isinstance(v, str) and len(v) > MAX_ATTR_TEXT:
            raise ValueError(f"{field}[{k!r}] has {len(v)} characters; at most {MAX_ATTR_TEXT}")
    return attrs
