"""Random event dicts through ingest + render: the only exception allowed is BehaviorRagError."""

from __future__ import annotations

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from behavior_rag.errors import BehaviorRagError
from behavior_rag.ingest.load import load_records
from behavior_rag.render import render
from behavior_rag.settings import Settings

SETTINGS = Settings(home="/tmp/behavior_rag_fuzz_home", ingest={"pseudonym_key": "fuzz"})
FIELDS = ["user_id", "session_id", "timestamp", "event_type", "item_id", "category", "brand",
          "price", "query"]

scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["view", "search", "cart", "remove_from_cart", "fav", "purchase", "pv",
                     "1700000000", "2024-01-01T00:00:00", "2024-13-45", "-3.5", "1e308",
                     "\ufffd", "\x00", "\n", '"', "9999999999999999999"]),
)
timestamps = st.one_of(st.integers(min_value=0, max_value=4_000_000_000),
                       st.datetimes().map(lambda d: d.isoformat()), scalar)
event = st.fixed_dictionaries(
    {"user_id": st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 5), scalar),
     "timestamp": timestamps,
     "event_type": st.one_of(st.sampled_from(["view", "search", "cart", "purchase", "fav"]),
                             scalar)},
    optional={k: scalar for k in FIELDS[4:] + ["session_id", "extra_attr"]},
)
# Mostly plausible events (so sessions really get built and rendered), some hostile ones.
plausible = st.fixed_dictionaries(
    {"user_id": st.sampled_from(["a", "b", "ü", "0"]),
     "timestamp": st.integers(min_value=1_500_000_000, max_value=1_500_100_000),
     "event_type": st.sampled_from(["view", "search", "cart", "remove_from_cart", "fav",
                                    "purchase"])},
    optional={"item_id": st.one_of(st.integers(0, 20), st.text(max_size=12)),
              "category": st.text(max_size=40), "brand": st.text(max_size=20),
              "price": st.one_of(st.floats(min_value=0, max_value=1e6), scalar),
              "query": st.text(max_size=60), "session_id": st.sampled_from([None, "S1", "S2"]),
              "note": scalar},
)
records = st.lists(st.one_of(plausible, plausible, plausible, event,
                             st.dictionaries(st.text(max_size=10), scalar, max_size=5)),
                   max_size=25)


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records, st.sampled_from(["strict", "lenient", "lenient"]))
def test_random_events_never_crash_ingest_or_render(recs, mode):
    try:
        result = load_records(recs, settings=SETTINGS, mode=mode)
    except BehaviorRagError:
        return
    for s in result.sessions:
        text = render(s, settings=SETTINGS)
        assert text.startswith("facts:")
