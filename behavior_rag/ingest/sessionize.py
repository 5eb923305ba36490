"""Split a user's events into sessions at inactivity gaps (when the source has no session id).

Rule: events are ordered by time (source order breaks ties, so out-of-order logs are fine); a
gap *strictly longer* than ``gap_minutes`` starts a new session, so two events exactly 30 minutes
apart stay together at the default. Rows that carry a source session id keep it.

Example:
    >>> import polars as pl
    >>> from datetime import datetime, timezone
    >>> t = lambda m: datetime(2024, 1, 1, 0, m, tzinfo=timezone.utc)
    >>> df = pl.DataFrame({"__row": [1, 2, 3], "user_id": ["u", "u", "u"],
    ...                    "session_id": [None, None, None], "_ts": [t(0), t(10), t(59)]})
    >>> sessionize(df, 20)["sid"].n_unique()
    2
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import polars as pl

from behavior_rag.ingest.readers import ROW


def gap_session_id(user_id: str, first: datetime) -> str:
    """The id of a session cut by the gap rule: ``s_`` + a hash of its user and first event
    time (aware UTC), so the same events always get the same id."""
    return "s_" + hashlib.sha1(f"{user_id}|{first.isoformat()}".encode(
        "utf-8", "replace")).hexdigest()[:16]


def sessionize(df: pl.DataFrame, gap_minutes: float) -> pl.DataFrame:
    """Add ``sid`` (session id) to a frame with ``user_id``, ``session_id``, ``_ts``, ``__row``."""
    gap = pl.duration(milliseconds=int(round(gap_minutes * 60_000)))
    df = df.sort(["user_id", "_ts", ROW])
    new = (pl.col("user_id") != pl.col("user_id").shift(1)).fill_null(True) | (
        (pl.col("_ts") - pl.col("_ts").shift(1)) > gap).fill_null(True)
    df = df.with_columns(new.cum_sum().alias("_seq"))
    starts = df.group_by("_seq").agg(pl.col("user_id").first(), pl.col("_ts").min().alias("_t0"))
    # The id depends only on (user, first event time): re-ingesting a longer log keeps old ids.
    starts = starts.with_columns(pl.struct("user_id", "_t0").map_elements(
        lambda s: gap_session_id(s["user_id"], s["_t0"]), return_dtype=pl.Utf8).alias("_gap_sid"))
    df = df.join(starts.select("_seq", "_gap_sid"), on="_seq", how="left")
    given = pl.col("session_id")
    # A source session id shared by several users would merge strangers: qualify it by user.
    shared = given.is_not_null() & (pl.col("user_id").n_unique().over("session_id") > 1)
    sid = pl.when(given.is_null()).then(pl.col("_gap_sid")) \
        .when(shared).then(given + ":" + pl.col("user_id")).otherwise(given)
    return df.with_columns(sid.alias("sid")).drop("_seq", "_gap_sid")
