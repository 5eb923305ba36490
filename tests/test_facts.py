"""Facts are computed by code and cite real event indices that show what the fact claims."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from behavior_rag.facts import compute_facts
from behavior_rag.types import Event, Session

T0 = datetime(2024, 3, 2, 19, 0, tzinfo=timezone.utc)  # a Saturday evening


def mk(*specs) -> Session:
    evs = [Event(user_id="u", timestamp=T0 + timedelta(seconds=t), type=ty, item_id=item,
                 category=cat, brand=brand, price=price, query=q)
           for t, ty, item, cat, brand, price, q in specs]
    return Session(session_id="s", user_id="u", events=evs)


SESSION = mk(
    (0, "search", None, None, None, None, "running shoes"),
    (30, "view", "A", "shoes", "nike", 80.0, None),
    (60, "view", "A", "shoes", "nike", 80.0, None),
    (200, "view", "B", "shoes", "asics", 60.0, None),
    (260, "view", "A", "shoes", "nike", 80.0, None),
    (300, "cart", "A", "shoes", "nike", 80.0, None),
    (320, "cart", "C", "socks", "nike", 5.0, None),
    (900, "purchase", "A", "shoes", "nike", 80.0, None),
)


def test_values_match_the_session():
    f = compute_facts(SESSION)
    assert (f.n_events.value, f.n_view.value, f.n_search.value, f.n_cart.value,
            f.n_purchase.value) == (8, 4, 1, 2, 1)
    assert f.duration_s.value == 900
    assert f.dwell_s.value == [30, 30, 140, 60, 40, 20, 580]
    assert f.dwell_max_s.value == 580 and f.dwell_max_s.events == [6, 7]
    assert (f.distinct_items.value, f.distinct_categories.value, f.distinct_brands.value) == (3, 2, 2)
    assert (f.price_min.value, f.price_median.value, f.price_max.value) == (5.0, 80.0, 80.0)
    assert f.price_min.events == [6]
    assert f.queries.value == ["running shoes"] and f.queries.events == [0]
    assert (f.carted_items.value, f.purchased_items.value, f.carted_not_purchased.value) == (2, 1, 1)
    assert f.carted_not_purchased.events == [6]
    assert f.cart_abandoned.value is False  # A was bought
    assert f.max_views_one_item.value == 3 and f.max_views_one_item.events == [1, 2, 4]
    assert f.repeat_views[0].item_id == "A"
    assert (f.start_hour.value, f.part_of_day.value, f.weekday.value) == (19, "evening", "Saturday")


def test_every_fact_cites_events_that_exist_and_show_it():
    f = compute_facts(SESSION)
    ev = SESSION.events
    for name, fact in f.as_dict().items():
        assert all(0 <= i < len(ev) for i in fact.events), name
    for t in ("view", "search", "cart", "purchase"):
        cited = getattr(f, f"n_{t}").events
        assert [ev[i].type for i in cited] == [t] * len(cited)
    assert all(ev[i].type == "cart" and ev[i].item_id == "C" for i in f.carted_not_purchased.events)
    assert all(ev[i].price == f.price_max.value for i in f.price_max.events)
    assert all(ev[i].item_id == "A" and ev[i].type == "view"
               for i in f.max_views_one_item.events)


def test_abandoned_cart_and_timezone():
    s = mk((0, "view", "X", "c", None, 10.0, None), (10, "cart", "X", "c", None, 10.0, None))
    f = compute_facts(s, tz="Asia/Shanghai")
    assert f.cart_abandoned.value is True and f.cart_abandoned.events == [1]
    assert f.start_hour.value == 3 and f.part_of_day.value == "night"  # 19:00 UTC = 03:00 +8


def test_facts_cite_real_events_on_real_taobao_sessions(taobao):
    for s in taobao.sessions[:3000]:
        f = compute_facts(s)
        assert f.n_events.value == s.n_events
        assert sum(getattr(f, f"n_{t}").value for t in
                   ("view", "search", "cart", "remove_from_cart", "fav", "purchase")) == s.n_events
        for name, fact in f.as_dict().items():
            assert all(0 <= i < s.n_events for i in fact.events), (s.session_id, name)
        assert all(s.events[i].type == "purchase" for i in f.purchased_items.events)


def test_aggregate_session_facts_have_no_events():
    s = Session(session_id="x", user_id="y", aggregates={"PageValues": 3.5, "Month": "Nov"})
    f = compute_facts(s)
    assert f.n_events.value == 0 and f.get("PageValues").value == 3.5
    assert f.get("PageValues").events == [] and f.start_hour.value is None
