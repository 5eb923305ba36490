"""The HTTP service end to end: a real uvicorn server on loopback, called through our Client.

Synthetic labelled shoppers, the int8 ONNX embedder and no LLM (kNN-only classification), so
the module runs in seconds. The only fake is an httpx MockTransport standing in for an
overloaded server in the retry test (the outside seam; nothing of ours is mocked).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest

from behavior_rag import AsyncClient, BehaviorRAG, Client, Filter, Settings
from behavior_rag.errors import ConfigError, DataError, TaxonomyError
from behavior_rag.service.limits import ModelSlots
from behavior_rag.service.run import serve_in_background
from behavior_rag.synth import generate
from behavior_rag.taxonomy import load_taxonomy
from behavior_rag.wire.errors import (
    AuthError,
    InvalidRequest,
    NotFoundError,
    Overloaded,
    RequestTimeout,
    RequestTooLarge,
    ServiceUnavailable,
)

KEY = "test-key-0123456789abcdef"
MAX_BODY = 256 * 1024
MAX_BATCH = 16


def _settings(home, **serve) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    serve={"api_key": KEY, "max_body_bytes": MAX_BODY, "max_batch": MAX_BATCH,
                           **serve})


@pytest.fixture(scope="module")
def svc(embed_home, tmp_path_factory):
    data = generate(240, seed=31).sessions
    users = sorted({x.user_id for x in data})
    held = set(users[::5])  # held-out shoppers: queries whose users are not in the index
    train = [x for x in data if x.user_id not in held]
    test = [x for x in data if x.user_id in held]
    s = _settings(embed_home)
    path = tmp_path_factory.mktemp("service") / "index"
    builder = BehaviorRAG(s, path)
    builder.add_labelled(train)
    builder.save()
    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:
        with Client(url, api_key=KEY) as client:
            yield SimpleNamespace(url=url, settings=s, path=path, train=train, test=test,
                                  client=client)


def _fresh(svc) -> BehaviorRAG:
    """An in-process facade over what the service has saved (it saves after every write)."""
    return BehaviorRAG(svc.settings, svc.path)


def _same(a, b) -> bool:
    drop = {"timings"}  # wall-clock seconds differ between any two runs
    return a.model_dump(exclude=drop) == b.model_dump(exclude=drop)


def test_open_endpoints_health_ready_metrics(svc):
    assert httpx.get(svc.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(svc.url + "/readyz").json()
    assert ready["ready"] and ready["index_size"] == len(svc.train)
    assert ready["backend"] == "onnx-int8" and ready["llm"] == "none"
    svc.client.taxonomy()
    text = httpx.get(svc.url + "/metrics").text
    assert 'behavior_rag_http_requests_total{route="/v1/taxonomy",method="GET",status="200"}' \
        in text
    for name in ("http_request_duration_seconds_bucket", "http_requests_in_flight",
                 'rejected_total{reason="overload"}', "model_slots_busy", "index_sessions"):
        assert f"behavior_rag_{name}" in text


def test_auth_refused_without_or_with_wrong_key(svc):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Basic {KEY}"}):
        r = httpx.get(svc.url + "/v1/taxonomy", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] == "AuthError" and "www-authenticate" in r.headers
    ok = httpx.get(svc.url + "/v1/taxonomy", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    with Client(svc.url, api_key="wrong") as bad, pytest.raises(AuthError) as e:
        bad.similar(text="buys gifts", k=2)
    assert e.value.status_code == 401


def test_http_and_in_process_give_identical_results(svc):
    rag = _fresh(svc)
    sessions = svc.test[:8]
    over_http = svc.client.classify(sessions)
    assert isinstance(over_http, list) and len(over_http) == 8
    for a, b in zip(over_http, rag.classify(sessions)):
        assert _same(a, b)
    one = svc.client.classify(sessions[0])
    assert _same(one, rag.classify(sessions[0])) and _same(one, over_http[0])
    assert svc.client.classify([]) == rag.classify([]) == []
    queries = [dict(session=sessions[1]), dict(session_id=svc.train[3].session_id),
               dict(user_id=svc.train[5].user_id), dict(text="searches for gifts, buys jewelry"),
               dict(text="cheap discounted items", filter=Filter(labels=["deal_hunter"])),
               dict(session_id=svc.train[7].session_id, with_text=True, k=3)]
    for q in queries:
        q.setdefault("k", 5)
        hits = svc.client.similar(**q)
        assert hits and hits == rag.similar(**q), q
    assert svc.client.taxonomy() == load_taxonomy(svc.settings.classify.taxonomy)


def test_upsert_then_classify_sees_the_new_labelled_session(svc):
    src = svc.test[0]
    new = src.model_copy(update={"session_id": "new_s1", "user_id": "new_u1",
                                 "label": "gift_shopper"})
    report = svc.client.add_labelled([new])
    assert (report.sessions, report.embedded) == (1, 1)
    assert report.index_size == len(svc.train) + 1
    assert svc.client.add_labelled([new]).unchanged == 1  # same text and label: skipped
    near = src.model_copy(update={"session_id": "near_s1", "user_id": "near_u1",
                                  "events": src.events[:-1] or src.events})
    pred = svc.client.classify(near)
    assert "new_s1" in pred.neighbors
    assert _fresh(svc).index.get("new_s1").label == "gift_shopper"  # saved on disk
    # Unlabelled upserts are allowed; a label outside the taxonomy is not.
    plain = src.model_copy(update={"session_id": "plain_s1", "user_id": "plain_u1",
                                   "label": None})
    assert svc.client.index_sessions([plain]).embedded == 1
    bad = plain.model_copy(update={"session_id": "bad_s1", "label": "martian"})
    with pytest.raises(TaxonomyError) as e:
        svc.client.index_sessions([bad])
    assert e.value.status_code == 422 and e.value.context["field"] == "sessions.0.label"
    with pytest.raises(TaxonomyError):  # add_labelled needs a label on every session
        svc.client.add_labelled([plain.model_copy(update={"session_id": "plain_s2"})])


def test_delete_then_unknown_ids_are_404(svc):
    s = svc.test[1].model_copy(update={"session_id": "del_s1", "user_id": "del_u1",
                                       "label": "deal_hunter"})
    svc.client.add_labelled([s])
    assert svc.client.similar(session_id="del_s1", k=1)
    assert svc.client.delete_sessions(["del_s1", "never_was"]) == 1
    assert svc.client.delete_sessions(["del_s1"]) == 0
    assert _fresh(svc).index.get("del_s1") is None
    with pytest.raises(NotFoundError) as e:
        svc.client.similar(session_id="del_s1", k=3)
    assert e.value.status_code == 404 and e.value.context["field"] == "session_id"
    with pytest.raises(ConfigError):  # what in-process code catches for the same mistake
        svc.client.similar(user_id="del_u1", k=3)
    with pytest.raises(ConfigError):
        _fresh(svc).similar(session_id="del_s1", k=3)
    r = httpx.delete(svc.url + "/v1/sessions", params={"session_id": ["x1", "x2"]},
                     headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["not_found"] == ["x1", "x2"]


def test_concurrent_writes_and_reads_interleave_safely(svc):
    from concurrent.futures import ThreadPoolExecutor

    new = [x.model_copy(update={"session_id": f"conc_s{i}", "user_id": f"conc_u{i}"})
           for i, x in enumerate(svc.test[10:16])]
    with Client(svc.url, api_key=KEY, max_retries=20, backoff_s=0.02) as c, \
            ThreadPoolExecutor(8) as pool:
        writes = [pool.submit(c.add_labelled, [s]) for s in new]
        reads = [pool.submit(c.classify, x) for x in svc.test[:10]]
        reads += [pool.submit(c.similar, text="buys gifts", k=5) for _ in range(4)]
        assert all(f.result().embedded == 1 for f in writes)
        assert all(f.result() for f in reads)
        assert c.delete_sessions([s.session_id for s in new]) == len(new)
    assert _fresh(svc).index.get("conc_s0") is None


def test_oversized_body_is_413_by_length_and_by_stream(svc):
    head = {"X-API-Key": KEY, "Content-Type": "application/json"}
    r = httpx.post(svc.url + "/v1/classify", content=b" " * (MAX_BODY + 1), headers=head)
    assert r.status_code == 413 and r.json()["error"] == "RequestTooLarge"

    def chunks():  # no Content-Length: the limit must hold while the stream is read
        yield b'{"sessions": ['
        for _ in range(MAX_BODY // 4096):
            yield b" " * 4096

    r = httpx.post(svc.url + "/v1/classify", content=chunks(), headers=head)
    assert r.status_code == 413 and r.json()["limit"] == MAX_BODY
    big = svc.test[0].model_copy(update={"aggregates": {"note": "x" * MAX_BODY}})
    with pytest.raises(RequestTooLarge) as e:
        svc.client.classify(big)
    assert e.value.status_code == 413


def test_a_refused_upload_many_times_the_limit_still_gets_its_413(svc):
    # The server used to close the socket with the body unread: the kernel then resets the
    # connection and the client often lost the 413 already sent (a connection error instead).
    head = {"X-API-Key": KEY, "Content-Type": "application/json"}
    big = b" " * (12 * MAX_BODY)

    def chunks():
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]

    for _ in range(10):
        for content in (big, chunks()):
            r = httpx.post(svc.url + "/v1/classify", content=content, headers=head)
            assert r.status_code == 413 and r.json()["error"] == "RequestTooLarge"


def test_malformed_json_and_wrong_types_are_422_naming_the_field(svc):
    head = {"X-API-Key": KEY, "Content-Type": "application/json"}
    r = httpx.post(svc.url + "/v1/similar", content=b'{"text": "gifts", "k": ', headers=head)
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = httpx.post(svc.url + "/v1/similar", json={"text": "gifts", "k": "many"}, headers=head)
    assert r.status_code == 422 and r.json()["field"] == "k"
    session = svc.test[0].model_dump(mode="json")
    session["events"][0]["type"] = "teleport"
    r = httpx.post(svc.url + "/v1/classify", json={"session": session}, headers=head)
    body = r.json()
    assert r.status_code == 422 and body["error"] == "InvalidRequest"
    assert body["field"] == "session.events.0.type" and "teleport" not in body["message"]
    r = httpx.post(svc.url + "/v1/similar", json={"text": "a", "user_id": "u"}, headers=head)
    assert r.status_code == 422 and "exactly one" in r.json()["message"]
    with pytest.raises(InvalidRequest) as e:  # the client rebuilds the same class
        svc.client.similar(text="gifts", k=0)
    assert isinstance(e.value, DataError) and e.value.context["field"] == "k"
    # In-process, the same parameter mistakes raise ConfigError: one except clause for both.
    for bad in (dict(text="gifts", k=0), dict(text="gifts", user_id="u")):
        with pytest.raises(ConfigError):
            svc.client.similar(**bad)
        with pytest.raises(ConfigError):
            _fresh(svc).similar(**bad)


def test_hostile_values_are_422_not_500(svc):
    head = {"X-API-Key": KEY, "Content-Type": "application/json"}
    ev = {"user_id": "u", "timestamp": "9999-12-31T23:59:59-23:59", "type": "view"}
    r = httpx.post(svc.url + "/v1/classify", headers=head,
                   json={"session": {"session_id": "s", "user_id": "u", "events": [ev]}})
    assert r.status_code == 422 and "1970..2100" in r.json()["message"]
    # A lone surrogate escape reaches pydantic as text the tokenizer cannot take.
    raw = ('{"session": {"session_id": "s", "user_id": "u", "events": [{"user_id": "u", '
           '"timestamp": "2020-01-01T00:00:00Z", "type": "search", "query": "\\ud800x"}]}}')
    r = httpx.post(svc.url + "/v1/classify", content=raw.encode(), headers=head)
    assert r.status_code == 422 and r.json()["field"] == "session.events.0.query"
    # Naive filter times mean UTC, as naive event times do.
    naive = {"text": "buys gifts", "k": 3, "filter": {"start_from": "2000-01-01T00:00:00"}}
    aware = {"text": "buys gifts", "k": 3, "filter": {"start_from": "2000-01-01T00:00:00Z"}}
    r1 = httpx.post(svc.url + "/v1/similar", json=naive, headers=head)
    r2 = httpx.post(svc.url + "/v1/similar", json=aware, headers=head)
    assert r1.status_code == 200 and r1.json() == r2.json() and r1.json()


def test_model_slots_time_out_and_refuse_without_queueing():
    async def run():
        slots = ModelSlots(1, acquire_timeout_s=0.0, request_timeout_s=0.05, retry_after_s=1)
        t = time.perf_counter()
        with pytest.raises(RequestTimeout):
            await slots.run(time.sleep, 0.4)
        assert time.perf_counter() - t < 0.3 and slots.busy == 1  # still held by the thread
        with pytest.raises(Overloaded) as e:
            await slots.run(sum, [1])
        assert e.value.context["retry_after"] == 1
        await asyncio.sleep(0.5)
        assert slots.busy == 0 and await slots.run(sum, [1, 2]) == 3  # freed when it ended
        slots.close()

    asyncio.run(run())


def test_batch_larger_than_max_batch_is_422_naming_the_field(svc):
    sessions = svc.test[: MAX_BATCH + 1]
    r = httpx.post(svc.url + "/v1/classify", headers={"X-API-Key": KEY},
                   json={"sessions": [x.model_dump(mode="json") for x in sessions]})
    body = r.json()
    assert r.status_code == 422 and body["error"] == "BatchTooLarge"
    assert body["field"] == "sessions" and body["limit"] == MAX_BATCH
    # A client sending bigger batches learns the service's limit from that error and splits.
    with Client(svc.url, api_key=KEY, batch_size=1000) as c:
        assert [p.session_id for p in c.classify_many(sessions)] == \
            [x.session_id for x in sessions]
        assert c.batch_size == MAX_BATCH


def test_burst_beyond_max_concurrency_gets_fast_503s_and_no_5xx(svc, tmp_path):
    path = shutil.copytree(svc.path, tmp_path / "ix")  # one folder, one service
    s = svc.settings.model_copy(update={"serve": svc.settings.serve.model_copy(update={
        "max_concurrency": 1, "acquire_timeout_s": 0.001})})
    sessions = svc.test[:40]

    async def one(c: AsyncClient, session):
        t = time.perf_counter()
        try:
            await c.classify(session)
            return "ok", time.perf_counter() - t
        except Overloaded as e:
            assert e.status_code == 503
            return "overloaded", time.perf_counter() - t

    async def burst(url):
        async with AsyncClient(url, api_key=KEY, max_retries=0) as c:
            return await asyncio.gather(*(one(c, x) for x in sessions))

    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:
        results = asyncio.run(burst(url))
        metrics = httpx.get(url + "/metrics").text
    kinds = [k for k, _ in results]
    assert kinds.count("overloaded") > 0 and kinds.count("ok") > 0
    assert max(t for k, t in results if k == "overloaded") < 2.0  # refused, not queued
    assert 'behavior_rag_rejected_total{reason="overload"} ' \
        f'{kinds.count("overloaded")}' in metrics
    assert 'status="500"' not in metrics


def test_async_client_mirrors_the_sync_one(svc):
    async def run():
        async with AsyncClient(svc.url, api_key=KEY) as c:
            return (await c.classify(svc.test[2]), await c.classify(svc.test[2:4]),
                    await c.similar(text="buys gifts", k=4), await c.taxonomy())

    one, many, hits, tax = asyncio.run(run())
    assert _same(one, svc.client.classify(svc.test[2])) and len(many) == 2
    assert hits == svc.client.similar(text="buys gifts", k=4)
    assert tax == svc.client.taxonomy()


def test_client_retries_503_honouring_retry_after_then_gives_up():
    calls = []
    tax = load_taxonomy().model_dump(mode="json")

    def overloaded_twice(request: httpx.Request) -> httpx.Response:
        calls.append(time.perf_counter())
        if len(calls) <= 2:
            return httpx.Response(503, headers={"Retry-After": "0.05"},
                                  json={"error": "Overloaded", "message": "busy"})
        return httpx.Response(200, json=tax)

    c = Client("http://service.invalid", api_key=KEY, transport=httpx.MockTransport(
        overloaded_twice))
    assert c.taxonomy() == load_taxonomy() and len(calls) == 3
    assert calls[1] - calls[0] >= 0.05  # waited as told
    calls.clear()
    with pytest.raises(Overloaded) as e:
        Client("http://service.invalid", max_retries=1, transport=httpx.MockTransport(
            overloaded_twice)).taxonomy()
    assert e.value.status_code == 503 and len(calls) == 2


def test_client_retries_connection_errors_then_raises_service_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Client(f"http://127.0.0.1:{port}", max_retries=2, backoff_s=0.01)
    with pytest.raises(ServiceUnavailable) as e:
        c.similar(text="x")
    assert e.value.context["attempts"] == 3


def test_cli_serve_runs_and_refuses_unsafe_setups(svc, tmp_path):
    path = shutil.copytree(svc.path, tmp_path / "ix")  # svc serves its own: one folder, one service
    cmd = [sys.executable, "-m", "behavior_rag.cli", "serve", "--index", str(path)]
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(svc.settings.home),
                        "BEHAVIOR_RAG_LLM__BACKEND": "none"}
    env.pop("BEHAVIOR_RAG_SERVE__API_KEY", None)
    for extra in ([], ["--host", "0.0.0.0", "--insecure-no-auth"]):
        p = subprocess.run(cmd + extra, capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 2 and '"ConfigError"' in p.stderr, p.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe nobody drains
    proc = subprocess.Popen(cmd + ["--port", str(port), "--log-level", "warning"],
                            env=env | {"BEHAVIOR_RAG_SERVE__API_KEY": KEY},
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        with Client(f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0) as c:
            deadline = time.monotonic() + 120
            while True:
                try:
                    assert c.ready()["index_size"] > 0
                    break
                except Exception:
                    assert proc.poll() is None and time.monotonic() < deadline, \
                        (tmp_path / "serve.log").read_text()[-3000:]
                    time.sleep(0.2)
            assert c.similar(text="buys gifts", k=2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert '"serving"' in (tmp_path / "serve.log").read_text()


def test_profiles_over_http_match_in_process_and_unknown_user_is_404(svc):
    from behavior_rag.errors import ConfigError
    from behavior_rag.profile import verify_profile

    user = svc.train[5].user_id
    over_http = svc.client.profile(user)
    assert over_http == _fresh(svc).profile(user)
    assert verify_profile(over_http, _fresh(svc).user_ids.sessions(svc.train)) == []  # as stored
    with pytest.raises(ConfigError):
        svc.client.profile("u_nobody")
    r = httpx.get(f"{svc.url}/v1/profiles/u_nobody", headers={"X-API-Key": KEY})
    assert r.status_code == 404 and r.json()["field"] == "user_id"
