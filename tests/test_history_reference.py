"""The history facts equal a straightforward reading of the earlier sessions' events (the
implementation before digests: every earlier event scanned per session), on synthetic and
real Taobao shoppers, through :class:`UserHistory`'s kept digests and without them."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from behavior_rag.history import SEEN, Propensity, UserHistory, history_facts
from behavior_rag.synth import generate
from behavior_rag.types import Citation, Fact


def _cite(pairs):
    by = defaultdict(list)
    for sid, i in pairs:
        by[sid].append(i)
    return [Citation(session_id=k, events=sorted(v)) for k, v in by.items()]


def reference_earlier(by_user, session):
    if not session.events:
        return []
    start = session.events[0].timestamp
    out = [s for sid, s in by_user.get(session.user_id, {}).items()
           if sid != session.session_id and s.events[-1].timestamp < start]
    return sorted(out, key=lambda s: s.events[-1].timestamp)


def reference_facts(session, earlier, propensity=None):
    """Every earlier event scanned for every fact."""
    ev = [(s.session_id, i, e) for s in earlier for i, e in enumerate(s.events)]
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


def _same(sessions, propensity=None):
    by_user = defaultdict(dict)
    for s in sessions:
        if s.events:
            by_user[s.user_id][s.session_id] = s
    h = UserHistory(sessions)
    n_with = 0
    for s in sessions:
        want_earlier = reference_earlier(by_user, s)
        earlier, got = h.facts(s, propensity)
        assert [x.session_id for x in earlier] == [x.session_id for x in want_earlier]
        want = reference_facts(s, want_earlier, propensity)
        assert got == want, s.session_id
        assert history_facts(s, earlier, propensity) == want  # digests made on the spot
        # the same JSON: no int read as a float, no citation order changed
        assert {k: f.model_dump_json() for k, f in got.items()} == \
            {k: f.model_dump_json() for k, f in want.items()}
        n_with += bool(earlier)
    return n_with


def test_history_facts_equal_the_reference_on_synthetic_shoppers():
    ss = generate(400, seed=7).sessions
    p = Propensity.fit(ss[:200], [s.label == "focused_buyer" for s in ss[:200]])
    assert _same(ss, p) > 50


def test_history_facts_equal_the_reference_on_taobao(taobao):
    ss = taobao.sessions[:6000]
    p = Propensity.fit(ss[:2000], [any(e.type == "purchase" for e in s.events)
                                   for s in ss[:2000]])
    assert _same(ss, p) > 500


def test_a_list_naming_one_session_twice_reads_as_the_reference():
    ss = generate(200, seed=3).sessions
    h = UserHistory(ss)
    s = max(ss, key=lambda x: len(h.earlier(x)))
    earlier = h.earlier(s)
    twice = [*earlier, earlier[0]]
    assert history_facts(s, twice) == reference_facts(s, twice)


def test_a_replaced_session_is_read_again():
    ss = generate(200, seed=3).sessions
    h = UserHistory(ss)
    s = max(ss, key=lambda x: len(h.earlier(x)))
    old = h.earlier(s)[0]
    before = h.facts(s)[1]
    moved = old.model_copy(update={"events": [
        e.model_copy(update={"type": "purchase", "timestamp": e.timestamp - timedelta(days=1)})
        for e in old.events]})
    h.add([moved])
    earlier, after = h.facts(s)
    assert after == reference_facts(s, earlier) != before
