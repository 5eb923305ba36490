"""Evidence is checked by code: wrong values, missing events and wrong event types are dropped;
label definitions (``requires`` / ``excludes``) are validated on load and applied to every
prediction; phrases read grammatically."""

from __future__ import annotations

import pytest

from behavior_rag.errors import TaxonomyError
from behavior_rag.evidence import check_definitions, definition_evidence, verify
from behavior_rag.facts import compute_facts
from behavior_rag.phrases import fact_phrase, sentence
from behavior_rag.taxonomy import load_taxonomy
from behavior_rag.types import Evidence


def test_true_claims_are_kept_and_false_ones_dropped(synth_sessions):
    s = next(x for x in synth_sessions if x.label == "cart_abandoner")
    f = compute_facts(s)
    cart = f.n_cart.events
    claims = [
        Evidence(fact="n_cart", value=f.n_cart.value),                       # true
        Evidence(fact="n_purchase", value=1),                                # invented purchase
        Evidence(fact="n_cart", value=f.n_cart.value, events=[cart[0]]),     # true, cites a cart
        Evidence(events=[cart[0]], event_type="cart"),                       # true event claim
        Evidence(events=[cart[0]], event_type="purchase"),                   # wrong type
        Evidence(events=[s.n_events + 5], event_type="view"),                # no such event
        Evidence(fact="no_such_fact", value=3),                              # unknown fact
        Evidence(fact="n_cart", value=f.n_cart.value, events=[s.n_events - 1]
                 if s.events[-1].type != "cart" else [0]),                  # wrong events
    ]
    kept, dropped = verify(claims, s, f)
    assert dropped == 5 and len(kept) == 3
    assert kept[0].events == f.n_cart.events  # a bare fact claim gets the events it rests on


def test_definition_evidence_is_the_labels_own_definition_met(synth_sessions):
    tax = load_taxonomy()
    for s in synth_sessions[:80]:
        f = compute_facts(s)
        ev = definition_evidence(s.label, f, tax)
        kept, dropped = verify(ev, s, f)
        assert dropped == 0 and len(kept) == len(ev)
        names = {p.fact for p, _ in tax.get(s.label).predicates}
        assert {e.fact for e in ev} == names  # synthetic personas meet their definitions


def test_a_label_whose_definition_fails_is_moved_or_abstains(synth_sessions):
    tax = load_taxonomy()
    window = next(s for s in synth_sessions if s.label == "window_shopper")
    f = compute_facts(window)  # no cart, no purchase
    c = check_definitions({"cart_abandoner": 0.6, "impulse_buyer": 0.3, "window_shopper": 0.1},
                          f, tax)
    assert c.label == "window_shopper" and c.moved_from == "cart_abandoner"
    assert c.probs == {"cart_abandoner": 0.0, "impulse_buyer": 0.0, "window_shopper": 1.0}
    assert "requires n_cart >= 1, but n_cart = 0" in c.warning
    none = check_definitions({"cart_abandoner": 0.6, "impulse_buyer": 0.4}, f, tax)
    assert none.abstain and none.label == "cart_abandoner" and "abstained" in none.warning
    ok = check_definitions({"window_shopper": 0.7, "impulse_buyer": 0.3}, f, tax)
    assert ok.moved_from is None and ok.warning is None
    assert ok.probs == {"window_shopper": 1.0, "impulse_buyer": 0.0}  # conditioned, no move


@pytest.mark.parametrize("bad, field, says", [
    ("n_carts >= 1", "labels.0.requires.0", "unknown fact 'n_carts'"),
    ("n_cart => 1", "labels.0.requires.0", "is not '<fact> <op> <value>'"),
    ("queries == 1", "labels.0.requires.0", "unknown fact 'queries'"),  # a list: not comparable
])
def test_label_definitions_are_validated_when_the_taxonomy_loads(tmp_path, bad, field, says):
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nlabels:\n  - name: buyer\n    description: Buys.\n"
                    f"    requires: ['{bad}']\n")
    with pytest.raises(TaxonomyError) as e:
        load_taxonomy(path)
    assert e.value.context["field"] == field and says in e.value.message
    assert e.value.context["file"] == str(path)


def test_a_taxonomy_without_definitions_keeps_its_hash():
    # adapters and fitted models record this hash: adding the fields must not change it
    tax = load_taxonomy("purchase_intent")
    assert all(not (lab.requires or lab.excludes) for lab in tax.labels)
    assert "requires" not in tax.model_dump_json(exclude_defaults=True)


@pytest.mark.parametrize("fact, values, expect", [
    ("n_purchase", (0, 1, 3), ("no purchase", "1 purchase", "3 purchases")),
    ("n_search", (0, 1, 2), ("no search", "1 search", "2 searches")),
    ("distinct_categories", (0, 1, 4), ("no category", "1 category", "4 categories")),
    ("n_cart", (0, 1, 2), ("nothing carted", "1 add-to-cart", "2 add-to-carts")),
    ("carted_not_purchased", (0, 1, 2), ("every carted item bought", "1 carted item not bought",
                                         "2 carted items not bought")),
    ("duration_s", (0.0, 45.0, 7200.0), ("session lasted 0 s", "session lasted 45 s",
                                          "session lasted 2 h")),
])
def test_phrases_agree_in_number_for_zero_one_and_many(fact, values, expect):
    assert tuple(fact_phrase(fact, v) for v in values) == expect


@pytest.mark.parametrize("voters, knn, says", [
    (0, 15, "None of the 15 nearest labelled sessions is x."),
    (1, 15, "1 of 15 nearest labelled sessions is x."),
    (4, 15, "4 of 15 nearest labelled sessions are x."),
])
def test_the_neighbours_sentence_agrees_in_number(voters, knn, says):
    assert sentence("x", 0.5, False, [], voters=voters, knn=knn).endswith(says)


def test_the_sentence_keeps_support_and_against_apart():
    text = sentence("cart_abandoner", 0.91, False, ["2 add-to-carts"], ["1 purchase"], 1, 1,
                    moved_from="window_shopper", reasons=["excludes n_cart >= 1, but n_cart = 2"])
    assert text == ("cart_abandoner (91% confident): 2 add-to-carts. Against: 1 purchase. "
                    "1 of 1 nearest labelled session is cart_abandoner. Moved from "
                    "window_shopper: excludes n_cart >= 1, but n_cart = 2.")


def test_weak_reasons_are_not_cited_beside_a_strong_one(synth_sessions):
    from behavior_rag.evidence import contribution_evidence

    f = compute_facts(next(s for s in synth_sessions if s.n_events > 3))
    contrib = {"n_view": 2.0, "n_events": 0.9, "duration_s": 0.3, "n_cart": -0.05}
    every, _ = contribution_evidence(contrib, f)
    strong, against = contribution_evidence(contrib, f, min_share=0.4)
    assert [e.fact for e in every] == ["n_view", "n_events", "duration_s"]
    assert [e.fact for e in strong] == ["n_view", "n_events"]  # 0.3 < 0.4 x 2.0
    assert [e.fact for e in against] == ["n_cart"]  # what argues against is still shown
