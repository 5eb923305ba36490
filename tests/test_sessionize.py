"""Sessionisation edge cases, through the public ingest API."""

from __future__ import annotations

from behavior_rag.ingest.load import load_records

T0 = 1_700_000_000  # unix seconds


def ev(user: str, t: int, etype: str = "view", item: str = "1", **kw) -> dict:
    return {"user_id": user, "timestamp": T0 + t, "event_type": etype, "item_id": item, **kw}


def sessions_of(records, settings, **kw):
    return load_records(records, settings=settings, **kw).sessions


def test_gap_exactly_at_threshold_stays_in_one_session(settings):
    out = sessions_of([ev("a", 0), ev("a", 30 * 60)], settings)
    assert [s.n_events for s in out] == [2]


def test_gap_one_second_over_threshold_splits(settings):
    out = sessions_of([ev("a", 0), ev("a", 30 * 60 + 1)], settings)
    assert [s.n_events for s in out] == [1, 1]


def test_gap_is_configurable(settings):
    s = settings.model_copy(update={"ingest": settings.ingest.model_copy(
        update={"session_gap_minutes": 5})})
    out = sessions_of([ev("a", 0), ev("a", 4 * 60), ev("a", 10 * 60)], s)
    assert [x.n_events for x in out] == [2, 1]


def test_out_of_order_timestamps_are_sorted_before_splitting(settings):
    # Written out of order; in time order the gaps are 10 min, 50 min.
    recs = [ev("a", 3600, item="c"), ev("a", 0, item="a"), ev("a", 600, item="b")]
    out = sessions_of(recs, settings)
    assert [[e.item_id for e in s.events] for s in out] == [["a", "b"], ["c"]]


def test_simultaneous_events_keep_source_order(settings):
    recs = [ev("a", 0, "view", "x"), ev("a", 0, "cart", "x"), ev("a", 0, "purchase", "x")]
    (s,) = sessions_of(recs, settings)
    assert [e.type for e in s.events] == ["view", "cart", "purchase"]


def test_one_event_sessions_and_users_never_mix(settings):
    recs = [ev("a", 0), ev("b", 10), ev("a", 5000)]
    out = sessions_of(recs, settings)
    assert sorted(s.n_events for s in out) == [1, 1, 1]
    assert len({s.user_id for s in out}) == 2
    for s in out:
        assert s.duration_s == 0.0 and s.events[0].session_id == s.session_id


def test_session_ids_are_stable_when_the_log_grows(settings):
    first = sessions_of([ev("a", 0), ev("a", 60)], settings)
    grown = sessions_of([ev("a", 0), ev("a", 60), ev("a", 9000), ev("b", 0)], settings)
    assert first[0].session_id in {s.session_id for s in grown}


def test_source_session_ids_are_kept_and_shared_ids_split_by_user(settings):
    recs = [ev("a", 0, session_id="S1"), ev("a", 99999, session_id="S1"),
            ev("b", 0, session_id="S2"), ev("c", 0, session_id="S2")]
    out = {s.session_id: s for s in sessions_of(recs, settings)}
    assert out["S1"].n_events == 2  # the source said one session: no gap split
    assert len([k for k in out if k.startswith("S2:")]) == 2
