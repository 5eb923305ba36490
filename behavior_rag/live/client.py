"""The live-session calls of :class:`behavior_rag.client.Client` and ``AsyncClient``
(a mixin: on the async client each call is awaited).

An append retried after a lost answer cannot double anything: the service skips events the
session already has and counts them in ``duplicates``.

Example:
    >>> from behavior_rag import Client
    >>> c = Client("http://127.0.0.1:8080", api_key="s3cret")               # doctest: +SKIP
    >>> a = c.live_append("web-42", [event])                                # doctest: +SKIP
    >>> a.prediction.label if a.changed else "unchanged"                    # doctest: +SKIP
    'no_purchase'
    >>> c.live_end("web-42").events                                         # doctest: +SKIP
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from behavior_rag.live.models import LiveAnswer, LiveEnd, LiveEvents, LiveList, LiveView
from behavior_rag.types import Event
from behavior_rag.wire.errors import invalid_request


def _path(session_id: str, tail: str = "") -> str:
    return f"/v1/live/{quote(session_id, safe='')}{tail}"


def _events(events: Sequence[Event | dict]) -> dict:
    """The request body, checked as the service checks it (422 before sending)."""
    try:
        body = LiveEvents(events=list(events))
    except ValidationError as e:
        raise invalid_request([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
                              ) from None
    return body.model_dump(mode="json", exclude_none=True)


class LiveCalls:
    """``live_append``, ``live_get``, ``live_end``, ``live_list`` over the client's transport
    (its retries and error classes)."""

    def live_append(self, session_id: str, events: Sequence[Event | dict]) -> LiveAnswer:
        """Append events to a live session (opened by its first append); the answer has
        the updated prediction, or ``changed=False``."""
        return self._drive(self._live(LiveAnswer, "POST", _path(session_id, "/events"),
                                      _events(events)))

    def live_get(self, session_id: str, *, fresh: bool = False) -> LiveView:
        """An open live session's state (``fresh``: re-score now)."""
        q = "?fresh=true" if fresh else ""
        return self._drive(self._live(LiveView, "GET", _path(session_id, q)))

    def live_end(self, session_id: str, *, commit: bool = False) -> LiveEnd:
        """End a live session (``commit``: into the index now, not with the next batch)."""
        q = "?commit=true" if commit else ""
        return self._drive(self._live(LiveEnd, "DELETE", _path(session_id, q)))

    def live_list(self, limit: int = 100) -> LiveList:
        """Open live sessions, most recently active first."""
        return self._drive(self._live(LiveList, "GET", f"/v1/live?limit={int(limit)}"))

    def _live(self, model, method: str, path: str, body: Any = None):
        return model.model_validate((yield from self._exchange(method, path, body)))
