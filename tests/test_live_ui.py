"""The web view's live page: open sessions with their score and evidence, updated without a
reload (server-sent events). Over HTTP always; in a real browser where Chromium is installed.
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from behavior_rag import BehaviorRAG, Client
from behavior_rag.service.run import serve_in_background
from behavior_rag.synth import generate
from tests.test_live import KEY, fitted_ix, live_settings, wait_live  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(fitted_ix, tmp_path_factory, embed_home):  # noqa: F811
    path = tmp_path_factory.mktemp("live-ui") / "ix"
    shutil.copytree(fitted_ix, path)
    s = live_settings(embed_home)
    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:
        with Client(url, api_key=KEY) as c:
            wait_live(c)
            yield url, c


def _cookie(url: str) -> dict:
    r = httpx.post(f"{url}/ui/login", data={"api_key": KEY, "next": "/ui/live"})
    return dict(r.cookies)


def test_the_live_page_and_its_stream_show_open_sessions_with_scores(server):
    url, c = server
    s = next(x for x in generate(20, seed=23).sessions if x.n_events >= 3)
    c.live_append("ui-1", s.events[:2])
    assert httpx.get(f"{url}/ui/live").status_code == 303  # not logged in: to the login form
    assert httpx.get(f"{url}/ui/live/stream").status_code == 401
    cookies = _cookie(url)
    page = httpx.get(f"{url}/ui/live", cookies=cookies)
    assert page.status_code == 200 and "ui-1" in page.text and "/ui/static/live.js" in page.text
    with httpx.stream("GET", f"{url}/ui/live/stream", cookies=cookies) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
    snap = json.loads(first.removeprefix("data: "))
    row = next(x for x in snap["sessions"] if x["session_id"] == "ui-1")
    assert row["events"] == 2 and row["label"] in ("will_buy", "no_purchase")
    assert 0 <= row["probability"] <= 1


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_live_page_updates_without_a_reload(server):
    sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, c = server
    s = next(x for x in generate(30, seed=29).sessions if x.n_events >= 4)
    c.live_append("ui-2", s.events[:1])
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        page.goto(f"{url}/ui/login?next=/ui/live")
        page.fill("#api_key", KEY)
        page.click("form.login button")
        page.wait_for_url(f"{url}/ui/live")
        page.wait_for_selector("#live-status:text('live')")
        c.live_append("ui-2", s.events[1:3])  # after the page loaded
        page.wait_for_selector("#live tbody tr:has(td:text-is('ui-2')) td:text-is('3 (3)')",
                               timeout=10_000)
        c.live_append("ui-3", s.events[:1])
        page.wait_for_selector("#live tbody td:text-is('ui-3')", timeout=10_000)
        b.close()
