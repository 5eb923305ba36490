"""The web view's access rules without a browser: no key configured (loopback only) means no
login; with a key, every page and the static files' neighbours need the cookie, and the login
never sends the browser to another site."""

from __future__ import annotations

import shutil
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from behavior_rag import BehaviorRAG
from behavior_rag.service.app import create_app
from behavior_rag.settings import ServeSettings


@pytest.fixture(scope="module")
def rag(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("ui-access") / "ix"
    shutil.copytree(fitted[3], path)
    return BehaviorRAG(fitted[0].settings, path)


class _Ready(TestClient):
    def __enter__(self):
        super().__enter__()
        t = time.monotonic()
        while self.get("/readyz").status_code != 200:  # the index loads in the background
            assert time.monotonic() - t < 120, "the service did not get ready"
            time.sleep(0.2)
        return self


def _client(rag, **serve) -> TestClient:
    return _Ready(create_app(rag, ServeSettings(**serve)), follow_redirects=False)


def test_without_a_key_on_loopback_the_pages_need_no_login(rag):
    with _client(rag, insecure_no_auth=True) as c:
        assert c.get("/").headers["location"] == "/ui/"
        sid = rag.index.metadata()["session_id"][0]
        page = c.get(f"/ui/sessions/{sid}")
        assert page.status_code == 200 and sid in page.text
        assert c.get("/ui/login").status_code == 303  # nothing to log in to


def test_with_a_key_pages_redirect_to_the_login_and_the_cookie_opens_them(rag):
    key = "k" * 32
    with _client(rag, api_key=SecretStr(key)) as c:
        r = c.get("/ui/similar?session_id=x")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
        assert c.get("/ui/static/ui.css").status_code == 200  # the stylesheet is not data
        bad = c.post("/ui/login", data={"api_key": "wrong", "next": "/ui/"})
        assert bad.status_code == 401 and "Wrong API key" in bad.text
        # a crafted next= never leaves the web view
        ok = c.post("/ui/login", data={"api_key": key, "next": "https://evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        assert "httponly" in ok.headers["set-cookie"].lower()
        assert c.get("/ui/similar").status_code == 200
        # the cookie opens pages, not the JSON API (that still wants the key itself)
        assert c.post("/v1/similar", json={"text": "x"}).status_code == 401


def test_what_shoppers_typed_is_shown_as_text_never_as_markup(rag):
    from datetime import datetime, timezone

    from behavior_rag.types import Event, Session

    t = datetime(2024, 11, 3, 12, tzinfo=timezone.utc)
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    s = Session(session_id="xss-1", user_id="u-xss", events=[
        Event(user_id="u-xss", timestamp=t, type="search", query=evil),
        Event(user_id="u-xss", timestamp=t.replace(minute=1), type="view", item_id="i1",
              category="<b>cat</b>")])
    with _client(rag, insecure_no_auth=True) as c:
        assert c.post("/v1/sessions", json={"sessions": [s.model_dump(mode="json")]}
                      ).status_code == 200
        page = c.get("/ui/sessions/xss-1").text
        sim = c.get("/ui/similar", params={"text": evil}).text
    for html in (page, sim):
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>cat" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;cat&lt;/b&gt;" in page


def test_the_overview_still_shows_when_discovery_finds_nothing(tmp_path, fitted):
    # ten copies of one session: k-means finds a single cluster; counts and labels still show
    from behavior_rag.synth import generate

    one = generate(1, seed=3).sessions[0]
    same = [one.model_copy(update={"session_id": f"same-{i}", "user_id": f"u{i}"})
            for i in range(12)]
    rag = BehaviorRAG(fitted[0].settings.model_copy(), tmp_path / "ix")
    rag.index_sessions(same)
    rag.save()
    with _client(BehaviorRAG(fitted[0].settings, tmp_path / "ix"), insecure_no_auth=True) as c:
        page = c.get("/ui/")
    assert page.status_code == 200 and "no patterns found" in page.text
    assert 'id="n-sessions">12<' in page.text
