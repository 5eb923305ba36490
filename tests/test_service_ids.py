"""The service keeps raw user ids out of its access log and its pages, names real routes in its
errors, and refuses to be a second, stale service over one folder."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from behavior_rag import BehaviorRAG, Client
from behavior_rag.errors import WriteConflict
from behavior_rag.service.run import serve_in_background
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.wire.errors import NotReady

RAW = "shopper-4242@example.com"


def _settings(home, **serve) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    ingest={"pseudonym_key": "service-ids-test"}, serve=serve)


@pytest.fixture()
def folder(tmp_path, embed_home):
    s = _settings(embed_home)
    rag = BehaviorRAG(s, tmp_path / "ix")
    mine = [x.model_copy(update={"user_id": RAW, "events": [
        e.model_copy(update={"user_id": RAW}) for e in x.events]})
        for x in generate(3, seed=73, prefix="raw").sessions]
    rag.index_sessions(generate(20, seed=72).sessions + mine)
    rag.save()
    return tmp_path / "ix", s, rag.user_ids(RAW), [m.session_id for m in mine]


def test_raw_ids_in_urls_never_reach_the_access_log_or_a_page(folder, capfd):
    path, s, pseudo, _ = folder
    s = s.model_copy(update={"serve": s.serve.model_copy(update={"insecure_no_auth": True})})
    with serve_in_background(BehaviorRAG(s, path), s.serve, log_level="info") as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get(f"/v1/profiles/{RAW}").status_code == 200
            missing = c.get("/v1/profiles/nobody-77@example.com")
            assert missing.status_code == 404 and "nobody-77" not in missing.text
            # the web view: a typed raw id is swapped for its pseudonym before any page shows it
            r = c.get("/ui/similar", params={"user_id": RAW, "k": 3})
            assert r.status_code == 303 and pseudo in r.headers["location"]
            page = c.get(r.headers["location"])
            assert page.status_code == 200 and f'value="{pseudo}"' in page.text
            r = c.get(f"/ui/users/{RAW}")
            assert r.status_code == 303 and r.headers["location"] == f"/ui/users/{pseudo}"
            assert c.get(r.headers["location"]).status_code == 200
            for r in (page, c.get("/ui/similar", params={"user_id": RAW}, follow_redirects=True),
                      c.get(f"/ui/users/{RAW}", follow_redirects=True)):
                assert RAW not in r.text and "4242" not in r.text and "example.com" not in r.text
    out = capfd.readouterr()
    log = out.out + out.err
    lines = [ln for ln in log.splitlines() if "/v1/profiles/" in ln or "/ui/" in ln]
    assert len(lines) >= 6 and f"/v1/profiles/{pseudo}" in log
    assert "example.com" not in log and "4242" not in log and "nobody-77" not in log


def test_the_write_conflict_names_a_route_that_deletes(folder):
    path, s, _, ids = folder
    s = s.model_copy(update={"serve": s.serve.model_copy(update={"insecure_no_auth": True})})
    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:
        writer = BehaviorRAG(s, path)
        with pytest.raises(WriteConflict) as e:
            writer.delete_sessions([ids[0]])
        assert "DELETE /v1/sessions/{id}" in e.value.message
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.delete(f"/v1/sessions/{ids[0]}")
            assert r.status_code == 200 and r.json()["deleted"] == 1
            assert c.delete(f"/v1/sessions/{ids[0]}").status_code == 404
        assert Client(url).similar(session_id=ids[1], k=1)
    assert BehaviorRAG(s, path).index.get(ids[0]) is None


def test_a_second_service_on_a_served_folder_refuses_to_start(folder):
    path, s, _, _ = folder
    s = s.model_copy(update={"serve": s.serve.model_copy(update={"insecure_no_auth": True})})
    with serve_in_background(BehaviorRAG(s, path), s.serve):
        with pytest.raises(NotReady, match="already served"):
            with serve_in_background(BehaviorRAG(s, path), s.serve):
                pass
        env = os.environ | {"BEHAVIOR_RAG_HOME": str(s.home), "BEHAVIOR_RAG_LLM__BACKEND": "none"}
        p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", "serve", "--index",
                            str(path), "--insecure-no-auth", "--port", "1"], capture_output=True,
                           text=True, env=env, timeout=120)
        assert p.returncode == 2 and "already served" in p.stderr, p.stderr[-2000:]
    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:  # free again once stopped
        assert Client(url).ready()["ready"]
