"""Which segments of a session store compaction rewrites, and how: tiered and bounded.

Small segments (under :data:`FULL_SEGMENT` live sessions) pile up as upserts commit; once more
than :data:`MAX_SEGMENTS` are small they are merged, in file order, into segments of up to
:data:`FULL_SEGMENT` live sessions. A segment whose rows are more than :data:`MAX_DEAD` dead is
rewritten whatever its size. Full, mostly live segments are never touched, so the cost of a
commit does not grow with the store. Merging copies columns
(:func:`~behavior_rag.ingest.segments.merge_segments`), one output segment at a time.

Example:
    >>> import polars as pl
    >>> from behavior_rag.ingest.segments import SegmentInfo
    >>> segs = [SegmentInfo(name=f"s{i}", sessions_file="a", events_file="b", sessions=10,
    ...                     events=10) for i in range(3)]
    >>> live = pl.DataFrame({"seg": ["s0"] * 10 + ["s1"] * 10 + ["s2"] * 2})
    >>> dead = pl.DataFrame({"seg": ["s2"] * 8}, schema={"seg": pl.Utf8})
    >>> [g.name for g in plan(segs, live, dead, every=False)]   # s2 is 80 % dead
    ['s2']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from behavior_rag.ingest.segments import SegmentInfo, merge_segments

MAX_SEGMENTS = 24  # small segments allowed before they are merged
FULL_SEGMENT = 100_000  # live sessions a merged segment holds at most; compaction leaves it be
MAX_DEAD = 0.25  # a segment with more than this share of dead rows is rewritten


def plan(segments: Sequence[SegmentInfo], live: pl.DataFrame, dead: pl.DataFrame, *,
         every: bool) -> list[SegmentInfo]:
    """The segments to rewrite (in store order): the small ones when more than
    :data:`MAX_SEGMENTS` are small (all small ones when ``every``), and any mostly dead."""
    n_live = dict(live.group_by("seg").len().iter_rows()) if live.height else {}
    n_dead = dict(dead.group_by("seg").len().iter_rows()) if dead.height else {}
    small = {g.name for g in segments if n_live.get(g.name, 0) < FULL_SEGMENT}
    rot = {g.name for g in segments if n_dead.get(g.name, 0) > MAX_DEAD * max(g.sessions, 1)}
    pick = small if every or len(small) > MAX_SEGMENTS else set()
    return [g for g in segments if g.name in pick | rot]


def merge(folder: Path, chosen: Sequence[SegmentInfo], live: pl.DataFrame
          ) -> list[SegmentInfo]:
    """Write the live rows of ``chosen`` as new segments of up to :data:`FULL_SEGMENT`
    sessions (a segment bigger than that on its own is rewritten alone); segments with no live
    row are simply dropped. Returns the new segments, not yet listed by any manifest."""
    out: list[SegmentInfo] = []
    batch: list[tuple[SegmentInfo, pl.DataFrame]] = []
    size = 0
    for g in chosen:
        rows = live.filter(pl.col("seg") == g.name)
        if not rows.height:
            continue
        if batch and size + rows.height > FULL_SEGMENT:
            out.append(merge_segments(folder, batch))
            batch, size = [], 0
        batch.append((g, rows))
        size += rows.height
    if batch:
        out.append(merge_segments(folder, batch))
    return out
