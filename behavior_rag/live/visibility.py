"""Which appended events a fitted model may see, decided per event in O(1).

A model fitted for an outcome target sees a session only up to the target's prediction point
(:class:`~behavior_rag.labels.targets.InputCut`); the classifier applies the cut itself. Live
sessions need to know *before* classifying whether an append changed what the model sees: if
not (a purchase model after the first cart, say), the answer is a cheap "unchanged". Every cut
kind is monotone in appended events, so this needs only a little state per session.

Example:
    >>> from behavior_rag.labels.targets import InputCut
    >>> from behavior_rag.synth import generate
    >>> s = generate(1, seed=2).sessions[0]
    >>> v = Visibility(InputCut.parse("first:2"))
    >>> [v.add(e) for e in s.events[:3]]
    [True, True, False]
    >>> v.visible
    2
"""

from __future__ import annotations

from datetime import datetime, timedelta

from behavior_rag.labels.targets import InputCut
from behavior_rag.types import Event


class Visibility:
    """Counts the events a model with input cut ``cut`` (None: sees everything) may see.

    Agrees with ``cut.keep(session)`` for events added in time order (tested)."""

    __slots__ = ("cut", "visible", "_stopped", "_end")

    def __init__(self, cut: InputCut | None) -> None:
        self.cut = cut
        self.visible = 0
        self._stopped = False  # before:T — an event of T was seen
        self._end: datetime | None = None  # minutes:N — first event + N minutes

    def add(self, event: Event) -> bool:
        """Whether ``event`` (the session's next one) is visible to the model."""
        seen = self._sees(event)
        self.visible += seen
        return seen

    def _sees(self, event: Event) -> bool:
        cut = self.cut
        if cut is None or cut.kind == "all":
            return True
        if cut.kind == "before":
            self._stopped = self._stopped or event.type in cut.types
            return not self._stopped
        if cut.kind == "first":
            return self.visible < (cut.n or 0)
        if cut.kind == "minutes":
            if self._end is None:
                self._end = event.timestamp + timedelta(minutes=cut.minutes or 0.0)
            return event.timestamp <= self._end
        return event.type in cut.types  # types:T
