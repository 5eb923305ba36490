"""The cyclic garbage collector paused while sessions are classified.

Classifying allocates many small objects (facts, evidence, predictions) that live until their
batch is explained or the call returns. Each of them counts toward the collector's thresholds,
so the collector kept making full passes over every object the process holds, the users'
recorded history included: measured, a large share of a facts-only call's time
(eval/reports/bench_heads.md). Reference counting still frees what a call drops (a facts-only
call leaves next to no cycles); the collector resumes when the call ends. Pauses nest and are
shared between threads: the collector resumes when the last one ends, and only if it ran
before the first began.

Example:
    >>> import gc
    >>> was = gc.isenabled()
    >>> with paused_gc():
    ...     gc.isenabled()
    False
    >>> gc.isenabled() == was
    True
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_state = {"depth": 0, "was_enabled": False}


@contextmanager
def paused_gc() -> Iterator[None]:
    """Automatic collection off inside the block (see the module's docstring)."""
    with _lock:
        if _state["depth"] == 0:
            _state["was_enabled"] = gc.isenabled()
            gc.disable()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0 and _state["was_enabled"]:
                gc.enable()
