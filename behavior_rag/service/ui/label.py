"""The web view's labelling queue (``/ui/label``): one session at a time, in the queue's
active-learning order, with its timeline, the model's evidence, its nearest labelled sessions
and suggested labels, each marked with where it came from. One click or key labels it
(digits pick a label, Enter accepts the first suggestion, S skips), through the same
:class:`~behavior_rag.service.labels.LabelService` as ``POST /v1/labels``.

The form is protected against cross-site requests twice: the login cookie is
``SameSite=Strict``, and every form carries a token bound to the browser's cookie (an HMAC with
a secret of this server process) that the POST must echo; a request whose ``Origin`` is another
site is refused too.

Example:
    >>> t = CsrfTokens(b"k" * 32)
    >>> t.valid(t.token("cookie-a"), "cookie-a"), t.valid(t.token("cookie-a"), "cookie-b")
    (True, False)
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from pydantic import BaseModel

from behavior_rag.annotate import QueueItem, QueueOrder
from behavior_rag.labels.agreement import Agreement
from behavior_rag.service.labels import FitJob, LabelService
from behavior_rag.service.ui.charts import Timeline, label_colour, span, timeline
from behavior_rag.service.ui.views import EventRow, _cites

KEYS = "123456789"


class CsrfTokens:
    """Form tokens bound to a browser's cookie, keyed by a per-process secret."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def token(self, cookie: str | None) -> str:
        return hmac.new(self.secret, (cookie or "no-cookie").encode(), hashlib.sha256
                        ).hexdigest()

    def valid(self, given: str | None, cookie: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given, self.token(cookie))


def same_origin(origin: str | None, host: str | None) -> bool:
    """A missing ``Origin`` passes (the token decides); a present one (``null`` included)
    must be this host."""
    return origin is None or urlsplit(origin).netloc == host


class Choice(BaseModel):
    label: str
    key: str
    colour: str
    suggested_by: list[str]


class LabelPage(BaseModel):
    order: QueueOrder
    item: QueueItem | None
    events: list[EventRow] = []
    timeline: Timeline | None = None
    choices: list[Choice] = []
    first: str | None = None  # the label Enter accepts: the first suggestion's
    agreement: Agreement
    csrf: str
    last: str | None = None  # the session labelled just before, for the "saved" note
    job: FitJob


def label_view(svc: LabelService, csrf: str, llm: bool, last: str | None) -> LabelPage:
    """The queue's head session and what the analyst needs to label it."""
    page = svc.queue(1, 1, llm)
    summary = svc.summary()
    item = page.items[0] if page.items else None
    base = dict(order=page.order, item=item, csrf=csrf, last=last,
                agreement=summary.llm_agreement, job=svc.job)
    if item is None:
        return LabelPage(**base)
    s, p = item.session, item.prediction
    n = s.n_events
    pro = _cites(p.evidence, n) if p is not None else {}
    con = _cites(p.against, n) if p is not None else {}
    events = [EventRow(index=i, type=e.type, time=e.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
                       offset=span((e.timestamp - s.start).total_seconds()), item=e.item_id,
                       category=e.category, brand=e.brand, price=e.price, query=e.query,
                       cited_by=pro.get(i, []), against_by=con.get(i, []))
              for i, e in enumerate(s.events)]
    names = list(svc.state.taxonomy.names)
    by = {lab: [x.source for x in item.suggestions if x.label == lab] for lab in names}
    choices = [Choice(label=lab, key=KEYS[i] if i < len(KEYS) else "", colour=label_colour(
        lab, names), suggested_by=by[lab]) for i, lab in enumerate(names)]
    return LabelPage(**base, events=events, choices=choices,
                     timeline=timeline(s, cited=set(pro), against=set(con)),
                     first=item.suggestions[0].label if item.suggestions else None)
