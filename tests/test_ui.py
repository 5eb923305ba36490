"""The web view in a real browser: headless Debian Chromium (driven by Playwright) against a real
``behavior-rag serve`` process on loopback over a small fitted index of synthetic shoppers.

Screenshots of every view (at 1280x800 and 390x844) go to ``.cache/ui-screenshots/`` on every
run; the README shows copies of them (docs/ui/).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from behavior_rag import BehaviorRAG, Client
from behavior_rag.errors import BehaviorRagError

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / ".cache" / "ui-screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(`apt-get install chromium`; .ci/run installs it)")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(fitted, embed_home, tmp_path_factory):
    """``(url, key, client, split, labelled sessions in the index)``: serve a copy of the
    shared fitted index (synthetic personas; the stack's facts head gives evidence for and
    against), the held-out users' sessions indexed unlabelled beside them."""
    rag, _, sp, fitted_path = fitted
    path = tmp_path_factory.mktemp("ui") / "ix"
    shutil.copytree(fitted_path, path)
    rag = BehaviorRAG(rag.settings, path)
    rag.index_sessions([x.model_copy(update={"label": None}) for x in sp.test])
    rag.save()
    labelled = rag.index.metadata()["label"].is_not_null().sum()  # what the overview counts
    del rag
    key, port = secrets.token_hex(16), _port()
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_SERVE__API_KEY": key,
                        "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
                        # a loaded CI box: wait for a model slot instead of a "busy" page
                        "BEHAVIOR_RAG_SERVE__ACQUIRE_TIMEOUT_S": "30",
                        "BEHAVIOR_RAG_SERVE__REQUEST_TIMEOUT_S": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "behavior_rag.cli", "serve", "--index",
                             str(path), "--port", str(port), "--llm", "none", "--log-level",
                             "warning"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    client = Client(url, api_key=key, max_retries=0, timeout=120)
    try:
        t = time.monotonic()
        while True:
            try:
                client.ready()
                break
            except BehaviorRagError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() - t < 300, "the service did not get ready"
                time.sleep(0.5)
        yield url, key, client, sp, labelled
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def browser():
    sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _login(browser, server, viewport="desktop"):
    url, key, *_ = server
    ctx = browser.new_context(viewport=VIEWPORTS[viewport])
    page = ctx.new_page()
    page.goto(url + "/ui/")
    page.fill("#api_key", key)
    page.click("form.login button")
    page.wait_for_url(url + "/ui/")
    return ctx, page


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _indices(page, selector: str) -> set[int]:
    return {int(x) for x in page.eval_on_selector_all(
        selector, "els => els.map(e => e.dataset.event)")}


def _with_evidence(client, sessions):
    """A labelled session whose prediction cites events for and against its label."""
    preds = client.classify(sessions)
    both = [(s, p) for s, p in zip(sessions, preds)
            if any(e.events for e in p.evidence) and any(e.events for e in p.against)]
    assert both, "no prediction cites events both for and against its label"
    return both[0]


def test_login_is_required_and_a_wrong_key_is_refused(browser, server):
    url, key, *_ = server
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(url + "/ui/similar")
    assert "/ui/login" in page.url and page.title().startswith("Log in")
    page.fill("#api_key", "not-the-key-" + secrets.token_hex(4))
    with page.expect_response(url + "/ui/login") as answer:
        page.click("form.login button")
    assert answer.value.status == 401
    assert "Wrong API key" in page.inner_text("[role=alert]")
    assert not ctx.cookies(), "a wrong key must not get a cookie"
    page.goto(url + "/ui/similar")
    assert "/ui/login" in page.url  # still refused
    page.fill("#api_key", key)
    page.click("form.login button")
    page.wait_for_url(url + "/ui/similar")  # back where the user wanted to go
    cookie = ctx.cookies()[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and key not in cookie["value"]
    page.click("form.logout button")
    page.goto(url + "/ui/")
    assert "/ui/login" in page.url
    ctx.close()


def test_overview_shows_the_index_and_the_patterns_found(browser, server):
    _, _, client, sp, labelled = server
    ctx, page = _login(browser, server)
    _shot(page, "overview")
    size = client.ready()["index_size"]
    assert page.inner_text("#n-sessions").replace(",", "") == str(size)
    assert labelled > 0
    assert page.inner_text("#n-labelled").replace(",", "") == str(labelled)
    cards = page.query_selector_all("article.pattern")
    assert len(cards) >= 3
    assert all(c.query_selector("li") for c in cards), "each pattern is described by facts"
    assert page.query_selector_all("svg.chart rect"), "the mix over time is drawn"
    taxonomy = client.taxonomy()
    assert {c.inner_text() for c in page.query_selector_all("table td:first-child .chip")} \
        == set(taxonomy.names)
    link = cards[0].query_selector("a[href^='/ui/sessions/']")
    sid = link.inner_text()
    link.click()
    assert sid in page.inner_text("h1")  # a representative session opens its page
    ctx.close()


def test_the_session_view_highlights_exactly_the_cited_events(browser, server):
    url, _, client, sp, _ = server
    session, pred = _with_evidence(client, sp.train[:40])
    ctx, page = _login(browser, server)
    page.goto(f"{url}/ui/sessions/{session.session_id}")
    _shot(page, "session")
    assert page.title().startswith(f"Session {session.session_id}")
    assert page.inner_text("#h-pred .chip") == pred.label
    assert page.inner_text("#explanation") == pred.explanation
    cited = {i for e in pred.evidence for i in e.events}
    against = {i for e in pred.against for i in e.events}
    assert _indices(page, "tr.event.cited") == cited  # read from the DOM
    assert _indices(page, "circle.mark.cited") == cited
    assert _indices(page, "tr.event.against") == against
    assert len(page.query_selector_all("tr.event")) == session.n_events
    facts = page.eval_on_selector_all("ul.evidence li", "els => els.map(e => e.dataset.fact)")
    assert facts == [e.fact for e in pred.evidence]
    shown = page.eval_on_selector_all("div.prob .plabel", "els => els.map(e => e.textContent)")
    assert set(shown) == set(pred.probabilities)
    ctx.close()


def test_a_neighbour_link_opens_that_session(browser, server):
    url, _, client, sp, _ = server
    session, pred = _with_evidence(client, sp.train[:40])
    assert pred.voters
    ctx, page = _login(browser, server)
    page.goto(f"{url}/ui/sessions/{session.session_id}")
    first = page.query_selector("ol.voters a")
    assert first.inner_text() == pred.voters[0].session_id
    first.click()
    page.wait_for_url(f"{url}/ui/sessions/{pred.voters[0].session_id}")
    assert pred.voters[0].session_id in page.inner_text("h1")
    ctx.close()


def test_similar_shoppers_with_filters_match_the_api(browser, server):
    url, _, client, sp, _ = server
    sid = sp.train[0].session_id
    ctx, page = _login(browser, server)
    page.goto(url + "/ui/similar")
    page.fill("#session_id", sid)
    page.fill("#k", "5")
    page.click("form.search button")
    _shot(page, "similar")
    rows = page.eval_on_selector_all("tr.hit", "els => els.map(e => e.dataset.session)")
    assert rows == [n.session_id for n in client.similar(session_id=sid, k=5)]
    assert page.query_selector_all("tr.hit svg.mini rect"), "mini-timelines drawn"
    label = client.taxonomy().names[0]
    page.select_option("#label", label)
    page.click("form.search button")
    chips = page.eval_on_selector_all("tr.hit .chip", "els => els.map(e => e.textContent)")
    assert chips and set(chips) == {label}
    page.fill("#session_id", "")
    page.fill("#text", "searches for sale items, compares cheap prices")
    page.select_option("#label", "")
    page.click("form.search button")
    assert len(page.query_selector_all("tr.hit")) == 5
    page.goto(url + "/ui/similar?session_id=no-such-session")
    assert "not in the index" in page.inner_text("[role=alert]")
    ctx.close()


def test_the_profile_view_shows_facts_and_the_sessions_they_cite(browser, server):
    url, _, client, sp, _ = server
    user = sp.train[0].user_id
    prof = client.profile(user)
    ctx, page = _login(browser, server)
    page.goto(f"{url}/ui/users/{prof.user_id}")
    _shot(page, "profile")
    shown = page.eval_on_selector_all("table.facts tr[data-fact]",
                                      "els => els.map(e => e.dataset.fact)")
    assert set(prof.facts) <= set(shown)
    assert page.inner_text("#narrative").startswith(prof.narrative.split(".")[0])
    link = page.query_selector("table.facts a[href^='/ui/sessions/']")
    sid = link.inner_text()
    assert sid in prof.session_ids
    link.click()
    assert sid in page.inner_text("h1")
    ctx.close()


CONTRAST = """els => els.map(e => {
  const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = c => { const [r, g, b] = c.map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const st = getComputedStyle(e);
  const a = lum(rgb(st.color)), b = lum(rgb(st.backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
})"""
UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`)) &&
               !e.getAttribute('aria-label')).map(e => e.name)"""


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_pages_are_accessible_and_fit_the_screen(browser, server, viewport):
    url, _, client, sp, _ = server
    session, _ = _with_evidence(client, sp.train[:40])
    ctx, page = _login(browser, server, viewport)
    pages = {"overview": "/ui/", "session": f"/ui/sessions/{session.session_id}",
             "similar": f"/ui/similar?session_id={session.session_id}",
             "profile": f"/ui/users/{session.user_id}", "login": "/ui/login"}
    titles = set()
    for name, path in pages.items():
        if name == "login":
            ctx.clear_cookies()
        page.goto(url + path)
        if viewport == "phone":
            _shot(page, f"{name}-phone")
        titles.add(page.title())
        assert page.title().endswith("behavior_rag") and page.query_selector("h1")
        assert page.evaluate(UNLABELLED) == [], f"{name}: form fields without a label"
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} scrolls sideways by {overflow}px at {viewport}"
        ratios = page.eval_on_selector_all(".chip, button", CONTRAST)
        assert all(r >= 4.5 for r in ratios), f"{name}: label colour contrast {min(ratios):.2f}"
    assert len(titles) == len(pages), "every view has its own title"
    ctx.close()
