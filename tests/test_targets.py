"""Outcome targets: input cuts parse (or say what is wrong), cut what they should, the purchase
target is exactly the eval's purchase-intent task, look-ahead rules label from later sessions,
and nothing after the prediction point reaches facts, text or history facts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from behavior_rag.errors import ConfigError, DataError
from behavior_rag.evaluation.tasks import purchase_intent
from behavior_rag.facts import compute_facts
from behavior_rag.history import UserHistory, history_facts
from behavior_rag.labels import (
    EmptyAfterCut,
    InputCut,
    Target,
    cut,
    known_targets,
    label_sessions,
    load_target,
)
from behavior_rag.render import render
from behavior_rag.synth import generate
from behavior_rag.types import Event, Session

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=timezone.utc)


def _session(sid: str, user: str, steps: list[tuple], start: datetime = T0) -> Session:
    """steps: (minutes after start, type, item[, price])."""
    ev = [Event(user_id=user, session_id=sid, timestamp=start + timedelta(minutes=m), type=t,
                item_id=item, category="c" + item[-1], price=(rest[0] if rest else None))
          for m, t, item, *rest in steps]
    return Session(session_id=sid, user_id=user, events=ev)


BUYER = [(0, "view", "i1", 10.0), (1, "search", "q1"), (2, "view", "i2", 12.0),
         (5, "cart", "secret7", 999.0), (6, "view", "i1", 10.0), (9, "purchase", "secret7", 999.0),
         (12, "view", "i3", 11.0)]


# ---------------------------------------------------------------- input cuts


@pytest.mark.parametrize("spec, kind", [("before:cart,purchase", "before"), ("first:5", "first"),
                                        ("minutes:2.5", "minutes"), ("types:view", "types"),
                                        ("all", "all"), (" FIRST:3 ", "first")])
def test_input_cut_parses_and_prints_its_spec(spec, kind):
    c = InputCut.parse(spec)
    assert c.kind == kind
    assert InputCut.parse(str(c)) == c  # the spec a fitted model records reads back the same


@pytest.mark.parametrize("spec, says", [
    ("later:5", "unknown input cut"), ("before:", "comma-separated list"),
    ("before:cart,,purchase", "comma-separated list"), ("types:click", "unknown event type"),
    ("first:0", "whole number >= 1"), ("first:2.5", "whole number >= 1"),
    ("first:x", "whole number >= 1"), ("minutes:-3", "minutes > 0"), ("minutes:inf", "> 0"),
    ("first", "needs an argument"), ("all:1", "takes no argument"),
    ("types:view,view", "twice"), ("", "unknown input cut")])
def test_bad_input_spec_is_a_clear_error(spec, says):
    with pytest.raises(ConfigError, match=says) as e:
        InputCut.parse(spec)
    assert e.value.context["field"] == "input"


def test_cuts_keep_what_they_say():
    s = _session("s", "u", BUYER)
    kinds = {spec: [e.type for e in InputCut.parse(spec).cut(s).events] for spec in
             ("before:cart,purchase", "before:purchase", "first:2", "minutes:2", "types:view",
              "types:view,search", "all")}
    assert kinds["before:cart,purchase"] == ["view", "search", "view"]
    assert kinds["before:purchase"] == ["view", "search", "view", "cart", "view"]
    assert kinds["first:2"] == ["view", "search"]
    assert kinds["minutes:2"] == ["view", "search", "view"]  # at most 2 minutes after the start
    assert kinds["types:view"] == ["view", "view", "view", "view"]
    assert kinds["types:view,search"] == ["view", "search", "view", "view", "view"]
    assert len(kinds["all"]) == len(BUYER)
    # a session total would tell what came after the prediction point: dropped by a cut
    agg = s.model_copy(update={"aggregates": {"revenue": 999.0}})
    assert InputCut.parse("first:2").cut(agg).aggregates == {}
    assert InputCut.parse("all").cut(agg).aggregates == {"revenue": 999.0}


def test_empty_after_cut_is_reported_not_kept():
    starts_with_cart = _session("s_cart", "u", [(0, "cart", "i1"), (1, "purchase", "i1")])
    with pytest.raises(EmptyAfterCut, match="nothing to predict from") as e:
        cut(starts_with_cart, load_target("purchase"))
    assert isinstance(e.value, DataError) and e.value.context["session_id"] == "s_cart"
    out = label_sessions([starts_with_cart, _session("s2", "u", BUYER, T0 + timedelta(days=1))],
                         "purchase")
    assert [s.session_id for s in out.sessions] == ["s2"]
    assert out.dropped_empty == 1 and out.empty_examples == ["s_cart"] and out.n_in == 2
    # types:view keeps the cart-first session's views: nothing else is dropped
    out = label_sessions([starts_with_cart], "purchase", input="types:view")
    assert out.sessions == [] and out.dropped_empty == 1


# ---------------------------------------------------------------- targets


def test_shipped_targets_load_with_their_taxonomies():
    assert set(known_targets()) >= {"purchase", "cart", "return_visit", "repeat_purchase"}
    for name in known_targets():
        t = load_target(name)
        assert set(t.load_taxonomy().names) == set(t.labels())
    p = load_target("purchase")
    assert (p.taxonomy, p.labels(), str(p.input)) == ("purchase_intent",
                                                      ("will_buy", "no_purchase"),
                                                      "before:cart,purchase")


def test_target_round_trips_as_json_and_hashes_its_content():
    t = load_target("purchase")
    back = Target.model_validate_json(t.model_dump_json())
    assert back == t and back.content_hash == t.content_hash
    assert t.with_input("first:5").content_hash != t.content_hash
    assert t.model_copy(update={"path": "/elsewhere.yaml"}).content_hash == t.content_hash


def test_bad_target_files_name_the_file_and_field(tmp_path):
    with pytest.raises(ConfigError, match="no shipped target") as e:
        load_target("purchse")
    assert "purchase" in e.value.context["known"]
    f = tmp_path / "t.yaml"
    good = ("name: mine\ntaxonomy: purchase_intent\npositive: will_buy\nnegative: no_purchase\n"
            "rule: {kind: contains, types: [purchase]}\n")
    f.write_text(good + "input: before:cart,buy\n")
    with pytest.raises(ConfigError, match="unknown event type") as e:
        load_target(f)
    assert e.value.context["file"] == str(f) and e.value.context["field"] == "input"
    f.write_text(good.replace("will_buy", "buyer") + "input: all\n")
    with pytest.raises(ConfigError, match="not the labels of its taxonomy"):
        load_target(f)
    f.write_text(good.replace("kind: contains", "kind: comes_back") + "input: all\n")
    with pytest.raises(ConfigError, match="needs `days`") as e:
        load_target(f)
    assert e.value.context["field"] == "rule"
    f.write_text(good + "input: all\nlabel_rule: x\n")
    with pytest.raises(ConfigError, match="Extra inputs"):
        load_target(f)
    # a taxonomy path is read relative to the target file
    (tmp_path / "tax").mkdir()
    (tmp_path / "tax" / "t.yaml").write_text(
        "name: t\nlabels:\n- {name: will_buy, description: a}\n"
        "- {name: no_purchase, description: b}\n")
    f.write_text(good.replace("purchase_intent", "tax/t.yaml") + "input: first:3\n")
    t = load_target(str(f))
    assert t.load_taxonomy().name == "t" and t.taxonomy_ref() == str(tmp_path / "tax" / "t.yaml")


def test_purchase_target_equals_the_eval_task_on_synthetic_sessions():
    sessions = generate(300, seed=1).sessions
    out = label_sessions(sessions, "purchase")
    assert out.sessions == purchase_intent(sessions)
    assert out.n_in - out.dropped_empty == len(out.sessions)


def test_purchase_target_equals_the_eval_task_on_taobao(taobao):
    out = label_sessions(taobao.sessions, "purchase")
    want = purchase_intent(taobao.sessions)
    assert len(want) > 1000 and out.sessions == want
    assert out.labels == {"will_buy": sum(s.label == "will_buy" for s in want),
                          "no_purchase": sum(s.label == "no_purchase" for s in want)}


def test_contains_rule_labels_the_whole_session_before_cutting():
    cart = load_target("cart")
    s = _session("s", "u", BUYER)
    [x] = label_sessions([s], cart).sessions
    assert x.label == "will_cart" and "cart" not in {e.type for e in x.events}
    [y] = label_sessions([s], "purchase", input="types:view").sessions  # RecSys 2015 setting
    assert y.label == "will_buy" and {e.type for e in y.events} == {"view"}


def _days(d: float) -> datetime:
    return T0 + timedelta(days=d)


def test_return_visit_looks_at_the_users_later_sessions_only():
    t = load_target("return_visit")  # 7 days
    a = _session("a", "u1", [(0, "view", "i1")], _days(0))
    b = _session("b", "u1", [(0, "view", "i2")], _days(3))     # a returns (3 days later)
    c = _session("c", "u2", [(0, "view", "i1")], _days(1))     # u2 never comes back
    d = _session("d", "u3", [(0, "view", "i1")], _days(0.5))
    e = _session("e", "u3", [(0, "view", "i1")], _days(9))      # too late for d
    end = _session("z", "u4", [(0, "view", "i1")], _days(20))  # the log runs to day 20
    out = label_sessions([a, b, c, d, e, end], t)
    got = {s.session_id: s.label for s in out.sessions}
    assert got == {"a": "returns", "b": "no_return", "c": "no_return", "d": "no_return",
                   "e": "no_return"}
    assert out.dropped_censored == 1  # z: its 7 days run past the log's end
    # `later` may hold more of the users' sessions than those labelled (e.g. a whole store)
    got = {s.session_id: s.label for s in label_sessions([c], t, later=[
        c, _session("c2", "u2", [(0, "view", "i9")], _days(2)), end]).sessions}
    assert got == {"c": "returns"}


def test_repeat_purchase_asks_only_about_buying_sessions():
    t = load_target("repeat_purchase")  # another purchase within 14 days
    buy = [(0, "view", "i1"), (1, "purchase", "i1")]
    a = _session("a", "u1", buy, _days(0))
    b = _session("b", "u1", [(0, "view", "i2")], _days(2))     # a visit, not a purchase
    c = _session("c", "u1", buy, _days(10))                    # buys again: a -> buys_again
    d = _session("d", "u2", buy, _days(1))
    end = _session("z", "u9", [(0, "view", "i1")], _days(30))
    out = label_sessions([a, b, c, d, end], t)
    assert {s.session_id: s.label for s in out.sessions} == {"a": "buys_again",
                                                             "c": "no_repeat",
                                                             "d": "no_repeat"}
    assert out.dropped_not_eligible == 2 and out.dropped_censored == 0
    assert len(out.sessions[0].events) == 2  # input `all`: the purchase is seen


# ---------------------------------------------------------------- leaks


def test_no_event_after_the_prediction_point_reaches_facts_or_text():
    full = _session("s", "u", BUYER)
    for spec in ("before:cart,purchase", "types:view", "first:3", "minutes:2"):
        seen = cut(full, spec)
        f = compute_facts(seen)
        assert f.n_cart.value == f.n_purchase.value == 0, spec
        assert f.carted_items.value == f.purchased_items.value == 0
        assert f.cart_abandoned.value is False
        assert f.price_max.value is not None and f.price_max.value < 999
        assert f.n_events.value == seen.n_events
        # every fact cites only events the model saw
        cited = [i for name in type(f).model_fields if hasattr(getattr(f, name), "events")
                 for i in getattr(f, name).events]
        assert all(i < seen.n_events for i in cited)
        text = render(seen, max_tokens=10_000)
        for token in ("cart", "purchase", "bought", "secret7", "999"):
            assert token not in text, (spec, token, text)
        # the text (so the vector) is that of a session that only ever had these events
        alone = Session(session_id="s", user_id="u", events=full.events[:seen.n_events]
                        if spec != "types:view" else [e for e in full.events
                                                      if e.type == "view"])
        assert text == render(alone, max_tokens=10_000)


def test_synthetic_sessions_cut_for_purchase_show_no_cart_or_purchase():
    out = label_sessions(generate(120, seed=5).sessions, "purchase")
    assert {s.label for s in out.sessions} == {"will_buy", "no_purchase"}
    for s in out.sessions:
        f = compute_facts(s)
        assert f.n_cart.value == f.n_purchase.value == f.n_remove_from_cart.value == 0
        text = render(s, max_tokens=10_000)
        assert "cart" not in text and "purchase" not in text and "bought" not in text


def test_history_facts_never_see_the_cut_sessions_own_later_events():
    full = _session("s", "u", BUYER, _days(5))
    before = _session("p", "u", [(0, "view", "i1"), (1, "cart", "old1")], _days(1))
    seen = cut(full, load_target("purchase"))
    # the recorded history holds the session in full (fit --history): it is never "earlier"
    hist = UserHistory([before, full])
    earlier = hist.earlier(seen)
    assert [s.session_id for s in earlier] == ["p"]
    h = history_facts(seen, earlier)
    assert h["purchases_before"].value == 0  # its own purchase is after the prediction point
    assert all(c.session_id == "p" for fact in h.values() for c in fact.cites)
    assert h["open_carts_before"].value == 1  # old1, carted in p; not secret7
