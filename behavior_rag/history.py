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

Each earlier session is read once into a :class:`Digest` (its purchases, carts, seen items and
categories, and the citations that never change). :meth:`UserHistory.facts` keeps the digests
and each user's sessions sorted by end, so a session's facts cost one pass over its earlier
*sessions*, not a scan of all their events per session classified.

Example:
    >>> from behavior_rag.synth import generate
    >>> sessions = generate(60, seed=4).sessions
    >>> h = UserHistory(sessions)
    >>> s = next(x for x in sessions if h.earlier(x))
    >>> earlier, f = h.facts(s)
    >>> f["sessions_before"].value == len(earlier) > 0
    True
    >>> f == history_facts(s, earlier)
    True
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, Field

from behavior_rag.types import Citation, Fact, Session

HISTORY_FACTS: tuple[str, ...] = (
    "sessions_before", "purchases_before", "days_since_previous", "open_carts_before",
    "items_seen_before", "category_share_before", "item_propensity", "category_propensity")
SEEN = ("view", "cart", "fav")
NONE = Fact(value=None)  # frozen: one instance serves every undefined fact


class Digest:
    """What the history facts read of one earlier session, gathered in one pass over its
    events (internal to this module: it never crosses a module line).

    Example:
        >>> from behavior_rag.synth import generate
        >>> s = generate(3, seed=1).sessions[0]
        >>> Digest(s).whole.session_id == s.session_id
        True
    """

    __slots__ = ("session", "whole", "last", "buys", "bought", "carts", "cart_items",
                 "all_carts", "seen", "cats", "n_cat")

    def __init__(self, s: Session, *same: Session) -> None:
        """``same``: more sessions under ``s``'s id, read as one (see :func:`_merged`)."""
        self.session = s
        self.whole = Citation(session_id=s.session_id)  # frozen: shared by every fact
        buys: list[int] = []
        self.bought: set[str] = set()
        self.carts: list[tuple[int, str]] = []  # (event, item) of carts with an item id
        self.seen: dict[str, list[int]] = defaultdict(list)  # item -> its seen events
        self.cats: dict[str, list[int]] = defaultdict(list)  # category -> its events
        for i, e in ((i, e) for x in (s, *same) for i, e in enumerate(x.events)):
            item = e.item_id
            if e.type == "purchase":
                buys.append(i)
                if item:
                    self.bought.add(item)
            elif e.type == "cart" and item:
                self.carts.append((i, item))
            if item and e.type in SEEN:
                self.seen[item].append(i)
            if e.category:
                self.cats[e.category].append(i)
        if same:  # citations list a session's events in order
            buys.sort()
            self.carts.sort(key=lambda t: t[0])
        self.n_cat = sum(map(len, self.cats.values()))
        self.cart_items = {item for _, item in self.carts}
        self.last = Citation(session_id=s.session_id, events=[s.n_events - 1])
        self.buys = Citation(session_id=s.session_id, events=buys) if buys else None
        self.all_carts = Citation(session_id=s.session_id, events=[i for i, _ in self.carts]) \
            if self.carts else None


class UserHistory:
    """Sessions by user, for :meth:`earlier` lookups. ``add(..., override=False)`` keeps a
    version already known (the full recorded session over an indexed prefix of it)."""

    def __init__(self, sessions: Iterable[Session] = ()) -> None:
        self._by_user: dict[str, dict[str, Session]] = defaultdict(dict)
        self._by_end: dict[str, tuple[list, list[Session]]] = {}  # per user, sorted by end
        self._digests: dict[str, Digest] = {}  # by session id; rebuilt when replaced
        self.add(sessions)

    def add(self, sessions: Iterable[Session], *, override: bool = True) -> None:
        for s in sessions:
            known = self._by_user[s.user_id]
            if s.events and (override or s.session_id not in known):
                known[s.session_id] = s
                self._by_end.pop(s.user_id, None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_user.values())

    def _sorted(self, user_id: str) -> tuple[list, list[Session]]:
        got = self._by_end.get(user_id)
        if got is None:
            # a stable sort: sessions ending together keep the order they were added in
            ss = sorted(self._by_user.get(user_id, {}).values(), key=lambda s: s.events[-1].timestamp)
            got = self._by_end[user_id] = ([s.events[-1].timestamp for s in ss], ss)
        return got

    def earlier(self, session: Session) -> list[Session]:
        """The user's sessions that ended strictly before ``session`` started, oldest first."""
        if not session.events:
            return []
        ends, ss = self._sorted(session.user_id)
        cut = bisect_left(ends, session.events[0].timestamp)
        return [s for s in ss[:cut] if s.session_id != session.session_id]

    def digest(self, s: Session) -> Digest:
        """``s`` read once for the history facts (kept until ``s`` is replaced)."""
        d = self._digests.get(s.session_id)
        if d is None or d.session is not s:
            d = self._digests[s.session_id] = Digest(s)
        return d

    def facts(self, session: Session, propensity: Propensity | None = None
              ) -> tuple[list[Session], dict[str, Fact]]:
        """``(earlier sessions, history facts)`` of ``session`` (see :func:`history_facts`)."""
        earlier = self.earlier(session)
        return earlier, history_facts(session, earlier, propensity, digest=self.digest)


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
            r = table.rate(k, self.prior, self.strength) if k and k in table.counts else None
            if r is not None and (best is None or r > best):
                best, key = r, k
        if best is None:
            return NONE
        return Fact(value=round(best, 4), events=[i for i, e in enumerate(session.events)
                                                  if getattr(e, attr) == key])


def _cites(parts: Iterable[tuple[Digest, list[int]]]) -> list[Citation]:
    """One citation per session with events, in the order the sessions come."""
    return [Citation(session_id=d.session.session_id, events=sorted(idx))
            for d, idx in parts if idx]


def history_facts(session: Session, earlier: Sequence[Session],
                  propensity: Propensity | None = None, *,
                  digest: Callable[[Session], Digest] = Digest) -> dict[str, Fact]:
    """:data:`HISTORY_FACTS` of ``session`` from ``earlier`` (see :meth:`UserHistory.earlier`;
    ``digest``: where the earlier sessions' digests come from, :meth:`UserHistory.digest`
    keeps them)."""
    ds = [digest(s) for s in earlier]
    whole, last = [d.whole for d in ds], ds[-1].last if ds else None
    ds = _merged(ds)
    bought = set().union(*(d.bought for d in ds))
    out = {"sessions_before": Fact(value=len(earlier), cites=whole),
           "purchases_before": Fact(value=sum(len(d.buys.events) for d in ds if d.buys),
                                    cites=[d.buys for d in ds if d.buys])}
    out["open_carts_before"] = _open_carts(ds, bought)
    if earlier and session.events:
        gap = (session.events[0].timestamp - earlier[-1].events[-1].timestamp).total_seconds()
        out["days_since_previous"] = Fact(value=round(gap / 86400, 3), events=[0],
                                          cites=[last])
    else:
        out["days_since_previous"] = NONE
    out["items_seen_before"] = _items_seen(session, ds)
    out["category_share_before"] = _category_share(session, ds)
    for name, attr in (("item_propensity", "item_id"), ("category_propensity", "category")):
        out[name] = propensity.best(session, attr) if propensity else NONE
    return out


def _merged(ds: list[Digest]) -> list[Digest]:
    """The digests, one per session id: a list naming one id twice (never one from
    :class:`UserHistory`) reads as that session's events in one, as citations group them."""
    ids = [d.session.session_id for d in ds]
    if len(set(ids)) == len(ids):
        return ds
    by: dict[str, list[Session]] = defaultdict(list)
    for d in ds:
        by[d.session.session_id].append(d.session)
    return [Digest(*v) for v in by.values()]


def _open_carts(ds: Sequence[Digest], bought: set[str]) -> Fact:
    items: set[str] = set()
    cites: list[Citation] = []
    for d in ds:
        if d.cart_items.isdisjoint(bought):  # most: nothing carted there was bought later
            items |= d.cart_items
            cites += [d.all_carts] if d.all_carts else []
            continue
        still = [(i, item) for i, item in d.carts if item not in bought]
        items.update(item for _, item in still)
        if still:
            cites.append(Citation(session_id=d.session.session_id, events=[i for i, _ in still]))
    return Fact(value=len(items), cites=cites)


def _items_seen(session: Session, ds: Sequence[Digest]) -> Fact:
    seen_before = set().union(*(d.seen for d in ds))
    now = [i for i, e in enumerate(session.events) if e.item_id in seen_before]
    now_items = {session.events[i].item_id for i in now}
    return Fact(value=len(now_items), events=now, cites=_cites(
        (d, [i for item in hit for i in d.seen[item]]) for d in ds
        if now_items and (hit := now_items.intersection(d.seen))))


def _category_share(session: Session, ds: Sequence[Digest]) -> Fact:
    cats = {e.category for e in session.events if e.category}
    with_cat = sum(d.n_cat for d in ds)
    parts = [(d, [i for c in hit for i in d.cats[c]]) for d in ds
             if cats and (hit := cats.intersection(d.cats))]
    hits = sum(len(idx) for _, idx in parts)
    return Fact(value=round(hits / with_cat, 4) if with_cat and cats else None,
                events=[i for i, e in enumerate(session.events) if e.category] if hits else [],
                cites=_cites(parts))


def check_citations(fact: Fact, session: Session, earlier: Sequence[Session]) -> bool:
    """Every session a fact cites is one of the user's earlier sessions, and every cited event
    exists in it."""
    if not fact.cites:
        return True
    known = {s.session_id: len(s.events) for s in earlier if s.user_id == session.user_id}
    return all(c.session_id in known and (not c.events or (
        min(c.events) >= 0 and max(c.events) < known[c.session_id])) for c in fact.cites)
