"""Evidence is checked by code: wrong values, missing events and wrong event types are dropped."""

from __future__ import annotations

from behavior_rag.evidence import evidence_for, explanation, verify
from behavior_rag.facts import compute_facts
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


def test_code_written_explanations_only_state_verified_facts(synth_sessions):
    tax = load_taxonomy()
    for s in synth_sessions[:80]:
        f = compute_facts(s)
        ev = evidence_for(s.label, f, tax)
        kept, dropped = verify(ev, s, f)
        assert dropped == 0 and kept
        text = explanation(s.label, 0.8, False, kept)
        assert text.startswith(f"{s.label} (80% confident)")
        if f.n_purchase.value == 0:
            assert "no purchase" in text or "purchases" not in text
