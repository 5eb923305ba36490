"""Live sessions: score a shopper while the session is still going.

Events are appended one request at a time (``POST /v1/live/{session_id}/events``); each append
is journalled (:mod:`.wal`), checked for order and duplicates within bounds (:mod:`.state`),
and answered with the updated prediction, or "unchanged" when nothing the model sees moved
(:mod:`.visibility`). Ended sessions go into the index by its atomic commit (:mod:`.commit`).
:mod:`.manager` ties these together; :mod:`behavior_rag.service.live` serves them and
:mod:`.client` calls them.

Example:
    >>> from behavior_rag.live import LiveEvents
    >>> LiveEvents.model_fields["events"].is_required()
    True
"""

from behavior_rag.live.models import LiveAnswer, LiveEnd, LiveEvents, LiveList, LiveScore, LiveView

__all__ = ["LiveAnswer", "LiveEnd", "LiveEvents", "LiveList", "LiveScore", "LiveView"]
