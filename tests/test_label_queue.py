"""The labelling queue: its active-learning order (TypiClust: the most typical session of each
unlabelled cluster at cold start, the model's least-sure session of each cluster once fitted), the JSON API (auth, refusals,
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
import numpy as np
import pytest

from behavior_rag.annotate import LabelDesk
from behavior_rag.annotate.desk import quiet
from behavior_rag.annotate.queue import MIN_CLUSTER, cluster_picks, margin, typicality
from behavior_rag.api import BehaviorRAG
from behavior_rag.labels import LabelSet, NewLabel
from behavior_rag.settings import Settings
from behavior_rag.synth import generate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_picks_go_to_clusters_with_fewest_labels_larger_first():
    assign = np.array([0] * 8 + [1] * 6 + [2] * 3)  # cluster 2 is an outlier (< MIN_CLUSTER)
    score = np.arange(17, dtype=float)
    labelled = np.zeros(17, bool)
    labelled[13] = True  # cluster 1 has a label
    got = cluster_picks(assign, score, labelled, 4)
    # the unlabelled cluster's best first; a pick counts as a label, so then the larger of
    # two clusters with one label each (0), then the one with fewer (1); the outlier
    # cluster only once nothing else is left
    assert got == [7, 6, 12, 5]
    assert 3 < MIN_CLUSTER
    got = cluster_picks(assign, score, labelled, 17)
    assert sorted(got) == sorted(set(range(17)) - {13}) and got[-3:] == [16, 15, 14]
    skip = np.zeros(17, bool)
    skip[7] = True
    assert cluster_picks(assign, score, labelled, 1, skip) == [6]


def test_typicality_prefers_the_dense_middle_of_a_cluster():
    rng = np.random.default_rng(0)
    core = rng.normal([1.0, 0.0, 0.0], 0.05, size=(30, 3))
    stray = np.array([[0.6, 0.8, 0.0]])
    x = np.vstack([core, stray])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = typicality(x, np.zeros(len(x), int))
    assert t.argmin() == 30 and t[:30].min() > 2 * t[30]


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
    assert all(e.session_id in by_model for e in order.entries)  # never a labelled one
    margins = [e.margin for e in order.entries]
    assert margins == sorted(margins)  # the batch is served least sure first
    # one entry per cluster: each is its cluster's least-sure unlabelled session
    assign, _ = desk.fine(desk.pool(list(rag.sessions.values())), order.clusters)
    ids = [x.session_id for x in desk.pool(list(rag.sessions.values()))]
    cluster = dict(zip(ids, assign))
    assert len({cluster[e.session_id] for e in order.entries}) == 8
    for e in order.entries:
        mates = [m for m in by_model if cluster[m] == cluster[e.session_id]]
        assert e.margin == pytest.approx(min(by_model[m] for m in mates), abs=1e-4)


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
    assert order["strategy"] == "typical_by_cluster" and "typical" in order["why"]
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
