"""The synthetic shopper generator: reproducible, honours the mix, and personas behave as named."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from statistics import mean

import pytest

from behavior_rag.errors import ConfigError
from behavior_rag.synth import PERSONAS, generate, make_catalog
from behavior_rag.taxonomy import load_taxonomy
from behavior_rag.types import Session


@pytest.fixture(scope="module")
def ds():
    # 800 sessions = 100 per persona: enough for stable averages, fast on a small machine.
    return generate(800, seed=3)


@pytest.fixture(scope="module")
def by_label(ds) -> dict[str, list[Session]]:
    out: dict[str, list[Session]] = defaultdict(list)
    for s in ds.sessions:
        out[s.label].append(s)
    return out


def _types(s: Session) -> list[str]:
    return [e.type for e in s.events]


def _viewed_prices(sessions: list[Session]) -> list[float]:
    return [e.price for s in sessions for e in s.events if e.type == "view"]


# -- reproducibility and mix ----------------------------------------------------------------

def test_same_seed_gives_identical_output_and_other_seed_differs():
    a, b = generate(60, seed=11), generate(60, seed=11)
    assert a.model_dump() == b.model_dump()
    c = generate(60, seed=12)
    assert c.model_dump()["sessions"] != a.model_dump()["sessions"]
    assert c.catalog.model_dump() != a.catalog.model_dump()


def test_mix_is_followed_exactly():
    ds = generate(400, seed=1, mix={"deal_hunter": 3, "window_shopper": 1})
    assert Counter(s.label for s in ds.sessions) == {"deal_hunter": 300, "window_shopper": 100}
    assert ds.mix["deal_hunter"] == 0.75 and ds.mix["gift_shopper"] == 0.0


def test_mix_rounds_by_largest_remainder():
    ds = generate(100, seed=1, mix={"focused_buyer": 1, "impulse_buyer": 1, "gift_shopper": 1})
    counts = Counter(s.label for s in ds.sessions)
    assert sorted(counts.values()) == [33, 33, 34] and sum(counts.values()) == 100


def test_default_mix_is_uniform(ds):
    assert Counter(s.label for s in ds.sessions) == {p: 100 for p in PERSONAS}


@pytest.mark.parametrize("mix, field", [
    ({"bargain_hunter": 1.0}, "mix"),
    ({"deal_hunter": -1.0, "gift_shopper": 2.0}, "mix.deal_hunter"),
    ({"deal_hunter": 0.0}, "mix"),
])
def test_bad_mix_raises_config_error_naming_the_problem(mix, field):
    with pytest.raises(ConfigError) as exc:
        generate(10, mix=mix)
    assert exc.value.context["field"] == field
    if "bargain_hunter" in mix:
        assert exc.value.context["value"] == "bargain_hunter"
        assert "bargain_hunter" in str(exc.value)


def test_personas_are_the_default_taxonomy_labels(ds):
    names = load_taxonomy("personas").names
    assert PERSONAS == names
    assert {s.label for s in ds.sessions} <= set(names)


# -- shape of the data ------------------------------------------------------------------------

def test_catalog_looks_like_a_shop():
    cat = make_catalog(0)
    codes = [c.code for c in cat.categories]
    assert 10 <= len(codes) <= 12 and all(re.fullmatch(r"[a-z]+\.[a-z]+", c) for c in codes)
    assert all(4 <= len(c.brands) <= 8 for c in cat.categories)
    assert len({it.item_id for it in cat.items}) == len(cat.items)
    assert all(it.item_id.isdigit() and it.price > 0 for it in cat.items)
    assert all(it.discount == 0 or 0.1 <= it.discount <= 0.5 for it in cat.items)
    # Smartphones cost more than snacks for nearly every pair of items.
    phones = [it.price for it in cat.items_in("electronics.smartphone")]
    snacks = [it.price for it in cat.items_in("grocery.snacks")]
    assert min(phones) > max(snacks)


def test_sessions_ids_times_and_events_are_well_formed(ds):
    start, end = datetime(2024, 11, 1, tzinfo=timezone.utc), datetime(2024, 12, 2,
                                                                       tzinfo=timezone.utc)
    ids = [s.session_id for s in ds.sessions]
    assert ids[0] == "synth_s000001" and len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"synth_s\d{6}", i) for i in ids)
    assert [s.start for s in ds.sessions] == sorted(s.start for s in ds.sessions)
    for s in ds.sessions:
        assert re.fullmatch(r"synth_u\d{5}", s.user_id) and s.source == "synth"
        assert s.events and start <= s.start and s.end < end
        assert [e.timestamp for e in s.events] == sorted(e.timestamp for e in s.events)
        for e in s.events:
            assert e.session_id == s.session_id and e.user_id == s.user_id
            if e.type == "search":
                assert e.query and e.item_id is None
            else:
                item = ds.catalog.item(e.item_id)
                assert (e.category, e.brand, e.price) == (item.category, item.brand, item.price)
                assert e.attrs == ({"discount": item.discount} if item.discount else {})


def test_users_mostly_stick_to_one_persona(ds):
    labels_of: dict[str, list[str]] = defaultdict(list)
    for s in ds.sessions:
        labels_of[s.user_id].append(s.label)
    assert len(labels_of) < len(ds.sessions) / 2  # users come back
    top = sum(Counter(v).most_common(1)[0][1] for v in labels_of.values())
    assert 0.7 < top / len(ds.sessions) < 0.97  # a primary persona, with some variety


def test_start_and_days_move_the_date_range():
    ds = generate(50, seed=2, start=datetime(2025, 3, 1), days=3)
    first = datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert all(first <= s.start < first + timedelta(days=4) for s in ds.sessions)


# -- personas behave as named -----------------------------------------------------------------

def test_window_shoppers_never_cart_or_buy(by_label):
    for s in by_label["window_shopper"]:
        assert not {"cart", "purchase", "remove_from_cart"} & set(_types(s))


def test_cart_abandoners_cart_and_never_buy(by_label):
    for s in by_label["cart_abandoner"]:
        assert "cart" in _types(s) and "purchase" not in _types(s)
    assert any("remove_from_cart" in _types(s) for s in by_label["cart_abandoner"])


def test_focused_buyers_are_quicker_than_comparison_shoppers(by_label):
    focused, comparing = by_label["focused_buyer"], by_label["comparison_shopper"]
    assert mean(s.n_events for s in focused) * 2 < mean(s.n_events for s in comparing)
    assert mean(s.duration_s for s in focused) * 3 < mean(s.duration_s for s in comparing)


def test_comparison_shoppers_span_more_brands_and_revisit_items(by_label):
    def brands(s):
        return len({e.brand for e in s.events if e.brand})

    def revisits(s):
        views = Counter(e.item_id for e in s.events if e.type == "view")
        return max(views.values(), default=0) >= 2

    comparing = by_label["comparison_shopper"]
    for other in ("focused_buyer", "loyal_repeat_buyer", "impulse_buyer"):
        assert mean(map(brands, comparing)) > mean(map(brands, by_label[other])) + 1.5
    assert mean(map(revisits, comparing)) > 0.8


def test_deal_hunters_look_at_cheaper_items_than_everyone_else(by_label):
    deal = mean(_viewed_prices(by_label["deal_hunter"]))
    for persona in PERSONAS:
        if persona != "deal_hunter":
            assert deal < 0.75 * mean(_viewed_prices(by_label[persona])), persona
    queries = [e.query for s in by_label["deal_hunter"] for e in s.events if e.query]
    assert all(re.search(r"sale|cheap|discount|deal|clearance|black friday", q) for q in queries)


def test_gift_shoppers_search_for_gifts_and_spend_more(ds, by_label):
    for s in by_label["gift_shopper"]:
        assert any(re.search(r"gift|present", e.query or "") for e in s.events)
    others = [q for p in PERSONAS if p != "gift_shopper" for s in by_label[p]
              for q in (e.query for e in s.events) if q]
    assert not any(re.search(r"gift|present", q) for q in others)

    # Pricier for their category: a gift book is still cheaper than an everyday phone.
    typical = {c.code: c.typical_price for c in ds.catalog.categories}

    def relative(sessions):
        return mean(e.price / typical[e.category] for s in sessions for e in s.events
                    if e.type == "view")

    others = [s for p in PERSONAS if p != "gift_shopper" for s in by_label[p]]
    assert relative(by_label["gift_shopper"]) > 1.3 * relative(others)


def test_impulse_buyers_buy_fast_without_searching(by_label):
    for s in by_label["impulse_buyer"]:
        assert "search" not in _types(s)
        bought = next(e for e in s.events if e.type == "purchase")
        first_view = next(e for e in s.events if e.item_id == bought.item_id)
        assert bought.timestamp - first_view.timestamp < timedelta(minutes=10)


def test_loyal_buyers_stick_to_one_brand_and_reorder(by_label):
    loyal = by_label["loyal_repeat_buyer"]
    share = [Counter(e.brand for e in s.events if e.brand).most_common(1)[0][1]
             / sum(1 for e in s.events if e.brand) for s in loyal]
    assert mean(share) > 0.75
    earlier: dict[str, set[str]] = defaultdict(set)
    reorders = 0
    for s in sorted((s for ss in by_label.values() for s in ss), key=lambda s: s.start):
        bought = {e.item_id for e in s.events if e.type == "purchase"}
        reorders += s.label == "loyal_repeat_buyer" and bool(bought & earlier[s.user_id])
        earlier[s.user_id] |= bought
    assert reorders >= 0.25 * len(loyal)


def test_no_single_event_type_decides_the_label(by_label):
    def rate(persona, kind):
        return mean(kind in _types(s) for s in by_label[persona])

    buyers = [p for p in PERSONAS if rate(p, "purchase") > 0.3]
    assert len(buyers) >= 5
    assert len([p for p in PERSONAS if rate(p, "search") > 0.3]) >= 4
    assert len([p for p in PERSONAS if rate(p, "cart") > 0.5]) >= 5
    # Buying is likely but not certain for most buying personas.
    assert len([p for p in buyers if rate(p, "purchase") < 0.97]) >= 3
    # Shared noise: stray views and favs show up in every persona.
    assert all(rate(p, "fav") > 0 for p in PERSONAS)
