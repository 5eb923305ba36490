"""The labelling queue: its active-learning order (cluster representatives at cold start, the
model's least-sure sessions spread over clusters once fitted), the JSON API (auth, refusals,
who/when recorded), a label that survives a SIGKILL of the server once acknowledged, and the
web view's keyboard flow and CSRF protection in a real browser."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from behavior_rag.annotate import LabelDesk
from behavior_rag.annotate.desk import quiet
from behavior_rag.annotate.queue import (
    CANDIDATES,
    least_sure_order,
    margin,
    representative_order,
)
from behavior_rag.api import BehaviorRAG
from behavior_rag.labels import LabelSet, NewLabel
from behavior_rag.settings import Settings
from behavior_rag.synth import generate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_least_sure_first_spread_over_clusters():
    margins = {"a1": 0.01, "a2": 0.02, "a3": 0.03, "b1": 0.05, "c1": 0.9}
    clusters = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": "C"}
    got = [e.session_id for e in least_sure_order(margins, clusters, 3)]
    # the least sure first; then the other clusters before A's near-duplicates
    assert got == ["a1", "b1", "c1"]


def test_cold_start_takes_representatives_round_by_round():
    reps = {"big": ["b1", "b2"], "small": ["s1", "s2"]}
    members = {"big": ["b1", "b2", "b3", "b4"], "small": ["s1", "s2"]}
    got = [e.session_id for e in representative_order(reps, members, 5)]
    assert got[:4] == ["b1", "s1", "b2", "s2"] and got[4] in {"b3", "b4"}
    # a labelled representative keeps its round: its cluster was covered there
    got = [e.session_id for e in representative_order(reps, members, 2, done={"b1"})]
    assert got == ["s1", "b2"]


def _settings(home, **kw) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    classify={"llm": "never"}, **kw)


def test_once_fitted_the_queue_starts_with_the_least_sure_session(fitted, embed_home,
                                                                   tmp_path):
    rag, _, sp, path = fitted
    shutil.copytree(path, tmp_path / "ix")
    rag = BehaviorRAG(_settings(embed_home), tmp_path / "ix")
    pool = [x.model_copy(update={"label": None}) for x in sp.test]
    rag.index_sessions(pool)
    rag.save()
    clf = rag.classifier
    labelled = LabelSet().append([NewLabel(session_id=x.session_id, label=x.label)
                                  for x in sp.train], source="file", who="t")
    desk = LabelDesk(rag.embedder, rag.taxonomy())
    order = desk.order(list(rag.sessions.values()), labelled, clf, n=8)
    assert order.strategy == "least_sure_by_cluster" and len(order.entries) == 8
    by_model = {p.session_id: margin(p.probabilities)
                for p in quiet(clf).classify_many(pool)}
    first = order.entries[0]
    assert first.session_id in by_model  # never a labelled session
    assert first.margin == pytest.approx(min(by_model.values()), abs=1e-4)
    # every entry is among the least-sure candidates, and more than one cluster is asked
    cut = sorted(by_model.values())[min(8 * CANDIDATES, len(by_model)) - 1]
    assert all(e.margin <= cut + 1e-4 for e in order.entries)
    assert len({e.cluster for e in order.entries}) > 1


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``behavior-rag serve`` on an index, as a user starts it; killed by the test."""

    def __init__(self, path, home, key: str) -> None:
        self.path, self.key, self.port = path, key, _port()
        self.env = os.environ | {"BEHAVIOR_RAG_HOME": str(home),
                                 "BEHAVIOR_RAG_SERVE__API_KEY": key,
                                 "BEHAVIOR_RAG_SERVE__KEY_NAME": "ana",
                                 "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
                                 "BEHAVIOR_RAG_SERVE__ACQUIRE_TIMEOUT_S": "30",
                                 "BEHAVIOR_RAG_SERVE__REQUEST_TIMEOUT_S": "300"}
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Served:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "behavior_rag.cli", "serve", "--index", str(self.path),
             "--port", str(self.port), "--llm", "none", "--log-level", "warning"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t = time.monotonic()
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            assert time.monotonic() - t < 300, "the service did not get ready"
            time.sleep(0.5)

    def get(self, path: str, **kw) -> httpx.Response:
        return self._retry("GET", path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self._retry("POST", path, **kw)

    def _retry(self, method: str, path: str, **kw) -> httpx.Response:
        """Send with the key; a 503 (the queue still clustering) is retried, as clients do."""
        for _ in range(120):
            r = httpx.request(method, self.url + path, headers={"X-API-Key": self.key},
                              timeout=300, **kw)
            if r.status_code != 503:
                return r
            time.sleep(1)
        return r

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture(scope="module")
def unlabelled_index(embed_home, tmp_path_factory):
    ix = tmp_path_factory.mktemp("queue") / "ix"
    rag = BehaviorRAG(_settings(embed_home), ix)
    rag.index_sessions([s.model_copy(update={"label": None})
                        for s in generate(150, seed=9).sessions])
    rag.save()
    return ix


@pytest.fixture()
def served(unlabelled_index, embed_home, tmp_path):
    shutil.copytree(unlabelled_index, tmp_path / "ix")
    srv = Served(tmp_path / "ix", embed_home, secrets.token_hex(16)).start()
    yield srv
    srv.kill()


def test_queue_api_cold_start_labels_refusals_and_a_sigkill(served):
    assert httpx.get(served.url + "/v1/labels/queue", timeout=30).status_code == 401
    page = served.get("/v1/labels/queue", params={"n": 5, "detail": 1}).json()
    order = page["order"]
    assert order["strategy"] == "cluster_representatives" and "cluster" in order["why"]
    ids = [e["session_id"] for e in order["entries"]]
    assert len(ids) == len(set(ids)) == 5
    item = page["items"][0]
    assert item["session"]["session_id"] == ids[0] and item["session"]["events"]
    bad = served.post("/v1/labels", json={"labels": [{"session_id": ids[0],
                                                       "label": "space_pirate"}]})
    assert bad.status_code == 422 and "taxonomy" in bad.json()["message"]
    bad = served.post("/v1/labels", json={"labels": [{"session_id": "nope",
                                                       "label": "deal_hunter"}]})
    assert bad.status_code == 422 and bad.json()["field"] == "session_id"
    ok = served.post("/v1/labels", json={"labels": [{"session_id": ids[0],
                                                      "label": "deal_hunter"}]})
    assert ok.status_code == 200 and ok.json()["added"] == 1
    event = ok.json()["events"][0]
    assert (event["who"], event["source"], event["previous"]) == ("ana", "human", None)
    # the labelled session leaves the queue
    again = served.get("/v1/labels/queue", params={"n": 5, "detail": 0}).json()
    assert ids[0] not in [e["session_id"] for e in again["order"]["entries"]]
    # acknowledged means committed: a SIGKILL right after loses nothing
    served.kill()
    served.start()
    summary = served.get("/v1/labels").json()
    assert summary["by_source"] == {"human": {"deal_hunter": 1}}
    assert summary["llm_agreement"]["weight"] == 0.0
    # label a few dozen more (as the analyst would), fit from the service, and the queue
    # turns to the new model's least-sure sessions
    truth = {s.session_id: s.label for s in generate(150, seed=9).sessions}
    more = served.get("/v1/labels/queue", params={"n": 40, "detail": 0}).json()
    ok = served.post("/v1/labels", json={"labels": [
        {"session_id": e["session_id"], "label": truth[e["session_id"]]}
        for e in more["order"]["entries"]]})
    assert ok.status_code == 200
    job = served.post("/v1/labels/fit")
    assert job.status_code == 202 and job.json()["state"] in ("running", "done")
    for _ in range(600):
        job = served.get("/v1/labels/fit").json()
        if job["state"] != "running":
            break
        time.sleep(1)
    assert job["state"] == "done", job
    assert job["training"]["sessions"] == 41 and job["report"]["dev"]["n_dev"] > 0
    after = served.get("/v1/labels/queue", params={"n": 5, "detail": 1}).json()
    assert after["order"]["strategy"] == "least_sure_by_cluster"
    assert after["items"][0]["suggestions"][0]["source"] == "model"
    near = after["items"][0]["neighbours"]
    given = truth | {ids[0]: "deal_hunter"}  # what the analyst answered
    assert near and all(given[n["session_id"]] == n["label"] and n["source"] == "human"
                        for n in near)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_web_queue_by_keyboard_with_csrf(served):
    sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    served.get("/v1/labels/queue", params={"n": 1, "detail": 0})  # clustered: pages answer
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_context().new_page()
        page.goto(served.url + "/ui/label")
        page.fill("#api_key", served.key)
        page.click("form.login button")
        page.wait_for_selector("#session-id")
        first = page.inner_text("#session-id")
        third = page.get_attribute('button[data-key="3"]', "value")
        page.keyboard.press("3")
        page.wait_for_selector("#saved")
        second = page.inner_text("#session-id")
        assert second != first
        page.keyboard.press("s")  # skip: the next page shows another session
        page.wait_for_function(f"document.querySelector('#session-id').innerText != "
                               f"'{second}'")
        # a form posted from elsewhere (no valid token) is refused and changes nothing
        token = page.get_attribute('input[name="csrf"]', "value")
        r = page.request.post(served.url + "/ui/label", form={
            "csrf": "0" * 64, "session_id": second, "label": third})
        assert r.status == 403
        r = page.request.post(served.url + "/ui/label", headers={
            "Origin": "http://evil.example"}, form={"csrf": token, "session_id": second,
                                                    "label": third}, max_redirects=0)
        assert r.status == 403
        b.close()
    summary = served.get("/v1/labels").json()
    assert summary["by_source"] == {"human": {third: 1}} and summary["events"] == 1
