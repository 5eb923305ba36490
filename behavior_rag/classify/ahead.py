"""One batch's heads in a worker thread while the caller prepares the next batch and explains
the last one.

The facts head's TreeSHAP (LightGBM) lets go of the GIL, and it was the largest single part of
a facts-only batch (eval/reports/bench_heads.md), so on a machine with a free core it overlaps
the Python that builds facts and evidence. A call with one batch has nothing to overlap with:
its heads run at once in the calling thread. Results are the same either way: only when the
work runs changes.

Example:
    >>> with ahead(1) as pool:
    ...     pool.submit(sum, [1, 2]).result()
    3
    >>> with ahead(3) as pool:
    ...     pool.submit(sum, [1, 2]).result()
    3
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager


class Inline:
    """A "pool" that runs what it is given at once, in the calling thread."""

    def submit(self, fn: Callable, *args) -> Future:
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as e:  # re-raised by .result(), as a pool's future would
            done.set_exception(e)
        return done


@contextmanager
def ahead(n_batches: int) -> Iterator[ThreadPoolExecutor | Inline]:
    """One worker thread when there is a next batch to overlap with, else :class:`Inline`."""
    if n_batches < 2:
        yield Inline()
        return
    with ThreadPoolExecutor(1, thread_name_prefix="behavior-rag-heads") as pool:
        yield pool
