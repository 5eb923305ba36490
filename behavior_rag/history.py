"""Cross-session facts: what a shopper's *earlier* sessions and the training data say about
this one, each citing the sessions and events it rests on.

A user's earlier sessions are those whose last event is strictly before this session's first
(:meth:`UserHistory.earlier`): nothing later, and never the session itself, can leak in. Item
and category purchase propensities come from labelled *training* sessions only
(:class:`Propensity`; out-of-fold while fitting, so a training row never sees its own label).

Facts (names as the facts head and explanations use them; None where undefined):

* ``sessions_before``, ``purchases_before``: earlier sessions and their purchase events;
* ``days_since_previous``: from the end of the latest earlier session to this start;
* ``open_carts_before``: items carted earlier and not bought in any earlier session;
* ``items_seen_before``: items of this session viewed, carted or faved earlier;
* ``category_share_before``: share of the earlier events in this session's categories;
* ``item_propensity`` / ``category_propensity``: the highest smoothed rate, among this session's
  items / categories, at which training sessions with them were positive.

Example:
    >>> from behavior_rag.synth import generate
    >>> sessions = generate(60, seed=4).sessions
    >>> h = UserHistory(sessions)
    >>> s = next(x for x in sessions if h.earlier(x))
    >>> f = history_facts(s, h.earlier(s))
    >>> f["sessions_before"].value == len(h.earlier(s)) > 0
    True
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from behavior_rag.types import Citation, Fact, Session

HISTORY_FACTS: tuple[str, ...] = (
    "sessions_before", "purchases_before", "days_since_previous", "open_carts_before",
    "items_seen_before", "category_share_before", "item_propensity", "category_propensity")
SEEN = ("view", "cart", "fav")


class UserHistory:
    """Sessions by user, for :meth:`earlier` lookups. ``add(..., override=False)`` keeps a
    version already known (the full recorded session over an indexed prefix of it)."""

    def __init__(self, sessions: Iterable[Session] = ()) -> None:
        self._by_user: dict[str, dict[str, Session]] = defaultdict(dict)
        self.add(sessions)

    def add(self, sessions: Iterable[Session], *, override: bool = True) -> None:
        for s in sessions:
            known = self._by_user[s.user_id]
            if s.events and (override or s.session_id not in known):
                known[s.session_id] = s

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_user.values())

    def earlier(self, session: Session) -> list[Session]:
        """The user's sessions that ended strictly before ``session`` started, oldest first."""
        if not session.events:
            return []
        start = session.events[0].timestamp
        out = [s for sid, s in self._by_user.get(session.user_id, {}).items()
               if sid != session.session_id and s.events[-1].timestamp < start]
        return sorted(out, key=lambda s: s.events[-1].timestamp)


class Rates(BaseModel):
    """Per key: ``[sessions, positive sessions]``."""

    counts: dict[str, list[int]] = Field(default_factory=dict)

    def rate(self, key: str, prior: float, strength: float) -> float | None:
        n, pos = self.counts.get(key, (0, 0))
        return (pos + strength * prior) / (n + strength) if n else None


class Propensity(BaseModel):
    """Smoothed rates at which labelled sessions that show an item (category) are positive.

    Example:
        >>> from behavior_rag.synth import generate
        >>> ss = generate(80, seed=1).sessions
        >>> p = Propensity.fit(ss, [s.label == "focused_buyer" for s in ss])
        >>> 0 <= p.prior <= 1
        True
    """

    prior: float
    strength: float = Field(10.0, description="Pseudo-sessions at the prior (smoothing).")
    items: Rates = Field(default_factory=Rates)
    categories: Rates = Field(default_factory=Rates)

    @classmethod
    def fit(cls, sessions: Sequence[Session], positive: Sequence[bool],
            min_count: int = 2) -> Propensity:
        items, cats = Counter(), Counter()
        items_pos, cats_pos = Counter(), Counter()
        for s, y in zip(sessions, positive):
            its = {e.item_id for e in s.events if e.item_id}
            cs = {e.category for e in s.events if e.category}
            items.update(its)
            cats.update(cs)
            if y:
                items_pos.update(its)
                cats_pos.update(cs)
        prior = sum(bool(y) for y in positive) / max(len(positive), 1)

        def rates(n: Counter, pos: Counter) -> Rates:  # rare keys: the prior says as much
            return Rates(counts={k: [v, pos[k]] for k, v in sorted(n.items()) if v >= min_count})

        return cls(prior=prior, items=rates(items, items_pos), categories=rates(cats, cats_pos))

    def best(self, session: Session, attr: str) -> Fact:
        """The highest rate among the session's items / categories, citing its events."""
        table = self.items if attr == "item_id" else self.categories
        best, key = None, None
        for e in session.events:
            k = getattr(e, attr)
            r = table.rate(k, self.prior, self.strength) if k else None
            if r is not None and (best is None or r > best):
                best, key = r, k
        if best is None:
            return Fact(value=None)
        return Fact(value=round(best, 4), events=[i for i, e in enumerate(session.events)
                                                  if getattr(e, attr) == key])


def _cite(pairs: Iterable[tuple[str, int]]) -> list[Citation]:
    by: dict[str, list[int]] = defaultdict(list)
    for sid, i in pairs:
        by[sid].append(i)
    return [Citation(session_id=k, events=sorted(v)) for k, v in by.items()]


def _events(earlier: Sequence[Session]):
    return [(s.session_id, i, e) for s in earlier for i, e in enumerate(s.events)]


def history_facts(session: Session, earlier: Sequence[Session],
                  propensity: Propensity | None = None) -> dict[str, Fact]:
    """:data:`HISTORY_FACTS` of ``session`` from ``earlier`` (see :meth:`UserHistory.earlier`)."""
    ev = _events(earlier)
    buys = [(sid, i) for sid, i, e in ev if e.type == "purchase"]
    bought = {e.item_id for _, _, e in ev if e.type == "purchase" and e.item_id}
    carts = [(sid, i, e.item_id) for sid, i, e in ev if e.type == "cart" and e.item_id
             and e.item_id not in bought]
    out = {"sessions_before": Fact(value=len(earlier), cites=[
               Citation(session_id=s.session_id) for s in earlier]),
           "purchases_before": Fact(value=len(buys), cites=_cite(buys)),
           "open_carts_before": Fact(value=len({item for _, _, item in carts}),
                                     cites=_cite((sid, i) for sid, i, _ in carts))}
    if earlier and session.events:
        last = earlier[-1]
        gap = (session.events[0].timestamp - last.events[-1].timestamp).total_seconds()
        out["days_since_previous"] = Fact(value=round(gap / 86400, 3), events=[0], cites=[
            Citation(session_id=last.session_id, events=[last.n_events - 1])])
    else:
        out["days_since_previous"] = Fact(value=None)
    seen_before = {e.item_id for _, _, e in ev if e.type in SEEN and e.item_id}
    now = [i for i, e in enumerate(session.events) if e.item_id in seen_before]
    now_items = {session.events[i].item_id for i in now}
    out["items_seen_before"] = Fact(value=len(now_items), events=now, cites=_cite(
        (sid, i) for sid, i, e in ev if e.type in SEEN and e.item_id in now_items))
    cats = {e.category for e in session.events if e.category}
    with_cat = [(sid, i, e) for sid, i, e in ev if e.category]
    hits = [(sid, i) for sid, i, e in with_cat if e.category in cats]
    out["category_share_before"] = Fact(
        value=round(len(hits) / len(with_cat), 4) if with_cat and cats else None,
        events=[i for i, e in enumerate(session.events) if e.category] if hits else [],
        cites=_cite(hits))
    for name, attr in (("item_propensity", "item_id"), ("category_propensity", "category")):
        out[name] = propensity.best(session, attr) if propensity else Fact(value=None)
    return out


def check_citations(fact: Fact, session: Session, earlier: Sequence[Session]) -> bool:
    """Every session a fact cites is one of the user's earlier sessions, and every cited event
    exists in it."""
    known = {s.session_id: s for s in earlier if s.user_id == session.user_id}
    return all(c.session_id in known and all(0 <= i < known[c.session_id].n_events
                                             for i in c.events) for c in fact.cites)
