"""Planted crash points for fault-injection tests: ``BEHAVIOR_RAG_CRASH_AT=<point>`` makes the
process SIGKILL itself when it reaches that point of a commit (nothing runs after it: no
finally blocks, no flushes), as a power cut there would. Unset, a point costs one dict lookup.

Points of :meth:`behavior_rag.BehaviorRAG.save`, in order: ``stores-prepared`` (new segments and
tombstones on disk), ``data-written`` (the next ``v-N`` folder complete, under a temp name),
``data-renamed`` (``v-N`` in place, ``config.json`` still the old one), ``committed``
(``config.json`` replaced, older versions and segments not yet swept).

Example:
    >>> crash_point("committed")  # no BEHAVIOR_RAG_CRASH_AT: nothing happens
"""

from __future__ import annotations

import os
import signal

POINTS = ("stores-prepared", "data-written", "data-renamed", "committed")
ENV = "BEHAVIOR_RAG_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
