"""Live sessions over HTTP: a real uvicorn server on loopback over an index with a fitted
facts-only purchase model (its prediction point: before the first cart or purchase), called
through our clients. Nothing of ours is faked.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest

from behavior_rag import AsyncClient, BehaviorRAG, Client, Settings
from behavior_rag.errors import DataError
from behavior_rag.evaluation import split_by_user
from behavior_rag.labels.outcomes import label_sessions
from behavior_rag.labels.targets import load_target
from behavior_rag.service.run import serve_in_background
from behavior_rag.synth import generate
from behavior_rag.types import Event
from behavior_rag.wire.errors import AuthError, BatchTooLarge, InvalidRequest, NotFoundError

KEY = "live-test-key-0123456789"


def live_settings(home, **live) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    ingest={"pseudonym_key": "live-test"}, classify={"taxonomy": "purchase_intent"},
                    serve={"api_key": KEY, "max_batch": 64}, live=live)


@pytest.fixture(scope="module")
def fitted_ix(embed_home, tmp_path_factory):
    """An index folder with a facts-only model fitted for the purchase target."""
    target = load_target("purchase")
    labelled = label_sessions(generate(260, seed=41).sessions, target).sessions
    sp = split_by_user(labelled, seed=0)
    ix = tmp_path_factory.mktemp("live") / "ix"
    BehaviorRAG(live_settings(embed_home), ix).fit(sp.train, sp.dev, heads=["facts"],
                                                   target=target)
    return ix


@pytest.fixture(scope="module")
def shoppers():
    """Fresh synthetic sessions (not in the index) with a cart after a few views."""
    out = [s for s in generate(60, seed=97).sessions if s.n_events >= 6]
    return out


def serve(ix, tmp_path, home, **live):
    path = tmp_path / "ix"
    shutil.copytree(ix, path)
    s = live_settings(home, **live)
    return s, path, serve_in_background(BehaviorRAG(s, path), s.serve)


def wait_live(c: Client) -> None:
    for _ in range(100):
        try:
            c.live_list()
            return
        except Exception:  # NotReady while the log is replayed
            time.sleep(0.05)


@pytest.fixture()
def svc(fitted_ix, tmp_path, embed_home):
    s, path, server = serve(fitted_ix, tmp_path, embed_home, commit_every_s=0.2)
    with server as url, Client(url, api_key=KEY) as c:
        wait_live(c)
        yield SimpleNamespace(url=url, c=c, path=path, settings=s)


def _views_then_cart(session):
    """A session's first views, then a cart event after them."""
    views = [e for e in session.events if e.type == "view"][:3]
    last = views[-1]
    cart = last.model_copy(update={"type": "cart", "timestamp": last.timestamp +
                                   timedelta(seconds=5)})
    return views, cart


def test_append_scores_then_answers_unchanged_past_the_prediction_point(svc, shoppers):
    views, cart = _views_then_cart(shoppers[0])
    first = svc.c.live_append("web-1", views[:1])
    assert first.opened and first.changed and first.added == 1
    p = first.prediction
    assert p.label in ("will_buy", "no_purchase") and 0 <= p.probability <= 1
    assert p.threshold is not None and p.visible == 1
    assert p.evidence or p.abstained
    more = svc.c.live_append("web-1", views[1:])
    assert more.events == len(views) and more.visible == len(views)
    # the purchase model sees only events before the first cart: a cart changes nothing it sees
    after = svc.c.live_append("web-1", [cart])
    assert (after.added, after.events, after.visible) == (1, len(views) + 1, len(views))
    assert not after.changed and after.prediction is None and not after.pending
    view = svc.c.live_get("web-1")
    assert view.events == len(views) + 1 and view.prediction.visible == len(views)
    # the user id is pseudonymised at the door
    assert view.user_id != views[0].user_id and view.user_id.startswith("u_")


def test_an_older_event_is_refused_naming_it_and_nothing_is_kept(svc, shoppers):
    ev = shoppers[1].events
    svc.c.live_append("web-2", ev[:3])
    late = ev[3].model_copy(update={"timestamp": ev[0].timestamp - timedelta(minutes=1)})
    with pytest.raises(InvalidRequest) as e:
        svc.c.live_append("web-2", [ev[3], late])
    assert e.value.context["field"] == "events.1.timestamp"
    assert "older than the session's last event" in e.value.message
    assert svc.c.live_get("web-2").events == 3  # ev[3] was not kept either


def test_the_same_event_twice_is_skipped_and_counted(svc, shoppers):
    ev = shoppers[2].events[:4]
    svc.c.live_append("web-3", ev)
    again = svc.c.live_append("web-3", [ev[1], ev[1], ev[2]])  # a retried request
    assert (again.added, again.duplicates, again.events) == (0, 3, 4)
    assert not again.changed
    mixed = svc.c.live_append("web-3", [ev[3], shoppers[2].events[4]])
    assert (mixed.added, mixed.duplicates) == (1, 1)


def test_events_of_another_user_are_refused(svc, shoppers):
    a, b = shoppers[3].events, shoppers[4].events
    svc.c.live_append("web-4", a[:1])
    with pytest.raises(InvalidRequest) as e:
        svc.c.live_append("web-4", [b[0].model_copy(update={"timestamp": a[0].timestamp})])
    assert e.value.context["field"] == "events.0.user_id"


def test_unknown_sessions_are_404_and_delete_commits_into_the_index(svc, shoppers):
    with pytest.raises(NotFoundError):
        svc.c.live_get("never-opened")
    with pytest.raises(NotFoundError):
        svc.c.live_end("never-opened")
    ev = shoppers[5].events
    svc.c.live_append("web-5", ev)
    end = svc.c.live_end("web-5", commit=True)
    assert end.events == len(ev) and end.committed
    with pytest.raises(NotFoundError):
        svc.c.live_get("web-5")
    stored = BehaviorRAG(svc.settings, svc.path).sessions.get("web-5")
    assert stored is not None and stored.n_events == len(ev)


def test_auth_is_required_like_every_v1_route(svc):
    with Client(svc.url, api_key="wrong-key-0123456789") as bad:
        with pytest.raises(AuthError):
            bad.live_list()
    r = httpx.post(f"{svc.url}/v1/live/x/events", json={"events": []})
    assert r.status_code == 401


def test_bounds_per_request_and_per_session(fitted_ix, tmp_path, embed_home, shoppers):
    _, _, server = serve(fitted_ix, tmp_path, embed_home, max_events=5)
    with server as url, Client(url, api_key=KEY) as c:
        wait_live(c)
        ev = shoppers[6].events
        c.live_append("b-1", ev[:4])
        with pytest.raises(BatchTooLarge) as e:
            c.live_append("b-1", ev[4:6])
        assert e.value.context["field"] == "events" and e.value.context["limit"] == 5
        assert c.live_get("b-1").events == 4
        many = [ev[0].model_copy(update={"timestamp": ev[0].timestamp + timedelta(seconds=i)})
                for i in range(65)]
        with pytest.raises(DataError) as e:  # serve.max_batch = 64 per request
            c.live_append("b-2", many)
        assert e.value.context["field"] == "events"
        with pytest.raises(InvalidRequest) as e:
            c.live_append("b-3", [])
        assert e.value.context["field"] == "events"


def test_the_least_recently_active_session_is_evicted_and_committed(fitted_ix, tmp_path,
                                                                    embed_home, shoppers):
    s, path, server = serve(fitted_ix, tmp_path, embed_home, max_open=2, commit_every_s=0.1)
    with server as url, Client(url, api_key=KEY) as c:
        wait_live(c)
        for i in range(3):
            c.live_append(f"e-{i}", shoppers[10 + i].events[:2])
            if i == 0:
                c.live_append("e-0", shoppers[10].events[2:3])
        c.live_append("e-1", shoppers[11].events[2:3])  # e-1 now more recent than e-2
        c.live_append("e-3", shoppers[13].events[:1])  # evicts e-0, then e-2
        with pytest.raises(NotFoundError):
            c.live_get("e-0")
        assert {v.session_id for v in c.live_list().sessions} == {"e-1", "e-3"}
        c.live_end("e-1", commit=True)
    stored = BehaviorRAG(s, path).sessions
    assert stored.get("e-0").n_events == 3 and stored.get("e-2").n_events == 2


def test_the_inactivity_gap_ends_a_session_into_the_index(fitted_ix, tmp_path, embed_home,
                                                          shoppers):
    s, path, server = serve(fitted_ix, tmp_path, embed_home, gap_minutes=0.01,
                            commit_every_s=0.1)
    with server as url, Client(url, api_key=KEY) as c:
        wait_live(c)
        c.live_append("g-1", shoppers[14].events[:3])
        deadline = time.monotonic() + 10
        while c.live_list().open or c.live_list().pending_commit:
            assert time.monotonic() < deadline, "the gap never ended the session"
            time.sleep(0.1)
    assert BehaviorRAG(s, path).sessions.get("g-1").n_events == 3


def test_async_client_mirrors_the_sync_one(svc, shoppers):
    ev = shoppers[7].events[:3]

    async def run():
        async with AsyncClient(svc.url, api_key=KEY) as ac:
            a = await ac.live_append("web-7", ev)
            v = await ac.live_get("web-7")
            return a, v, await ac.live_end("web-7")

    a, v, end = asyncio.run(run())
    assert a.events == v.events == end.events == 3
    assert v.prediction.label == a.prediction.label


def test_malformed_events_are_refused_before_sending(svc):
    with pytest.raises(InvalidRequest) as e:
        svc.c.live_append("web-8", [{"user_id": "u", "type": "teleport",
                                     "timestamp": "2024-01-01T00:00:00Z"}])
    assert e.value.context["field"] == "events.0.type"
    assert isinstance(Event, type)


def test_a_session_reopened_after_its_commit_continues_the_stored_one(svc, shoppers):
    ev = shoppers[8].events
    svc.c.live_append("web-9", ev[:2])
    svc.c.live_end("web-9", commit=True)
    again = svc.c.live_append("web-9", ev[2:4])  # the shopper came back, same session id
    assert again.opened and again.events == 2
    svc.c.live_end("web-9", commit=True)
    stored = BehaviorRAG(svc.settings, svc.path).sessions.get("web-9")
    assert stored.n_events == 4 and [e.type for e in stored.events] == \
        [e.type for e in ev[:4]]
