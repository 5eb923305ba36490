"""Input bounds hold at every entry point — ingest, the Python API, HTTP — each violation a
clear error naming the field (bounds.py is the one place they live)."""

from __future__ import annotations

import httpx
import pytest

from behavior_rag import BehaviorRAG, load_events
from behavior_rag.bounds import MAX_EVENTS, MAX_QUERY
from behavior_rag.errors import ConfigError, IngestError
from behavior_rag.settings import Settings
from behavior_rag.synth import generate

KEY = "bounds-test-key-0123456789abcdef"


def _session(**event):
    e = generate(1, seed=61).sessions[0].model_dump(mode="json")
    e["events"][0].update(event)
    return e


@pytest.fixture(scope="module")
def url(embed_home, tmp_path_factory):
    from behavior_rag.service.run import serve_in_background

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 serve={"api_key": KEY})
    path = tmp_path_factory.mktemp("bounds") / "ix"
    rag = BehaviorRAG(s, path)
    rag.index_sessions(generate(20, seed=62).sessions)
    rag.save()
    with serve_in_background(BehaviorRAG(s, path), s.serve) as u:
        yield u


@pytest.mark.parametrize("body, field", [
    ({"sessions": [_session()], "split": "x" * 1_500_000}, "split"),
    ({"sessions": [_session(timestamp="0001-01-01T00:00:00Z")]}, "timestamp"),
    ({"sessions": [_session(timestamp="9999-12-31T00:00:00Z")]}, "timestamp"),
    ({"sessions": [_session(price=1e308)]}, "price"),
    ({"sessions": [_session(query="q" * (MAX_QUERY + 1))]}, "query"),
    ({"sessions": [_session(user_id="u" * 300)]}, "user_id"),
    ({"sessions": [_session(attrs={f"k{i}": 1 for i in range(100)})]}, "attrs"),
])
def test_http_refuses_out_of_bounds_input_naming_the_field(url, body, field):
    r = httpx.post(url + "/v1/sessions", headers={"X-API-Key": KEY}, json=body, timeout=60)
    assert r.status_code == 422, r.text[:500]
    assert field in r.text[:2000]
    count = httpx.get(url + "/readyz", timeout=30)
    assert count.status_code == 200  # and the service is fine


def test_the_python_api_refuses_a_huge_split(tmp_path, embed_home):
    rag = BehaviorRAG(Settings(home=embed_home, embed={"backend": "onnx-int8"},
                               llm={"backend": "none"}), tmp_path / "ix")
    with pytest.raises(ConfigError) as e:
        rag.index_sessions(generate(2, seed=63).sessions, split="s" * 5000)
    assert e.value.context["field"] == "split"


def test_ingest_names_the_row_of_an_overlong_query_and_drops_a_crawler(tmp_path, settings):
    p = tmp_path / "ev.csv"
    rows = ["user_id,timestamp,event_type,item_id,query",
            "u1,2024-01-01 10:00:00,view,1,",
            f"u1,2024-01-01 10:01:00,search,,{'q' * (MAX_QUERY + 5)}"]
    rows += [f"bot,2024-01-02 10:00:{i % 60:02d},view,{i}," for i in range(MAX_EVENTS + 1)]
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(IngestError) as e:
        load_events(p, "generic", settings=settings, mode="strict")
    assert (e.value.context["row"], e.value.context["field"]) == (2, "query")
    res = load_events(p, "generic", settings=settings, mode="lenient")
    assert [s.n_events for s in res.sessions] == [1]  # the crawler's session is refused too
    assert res.report.skipped_by_reason.get("too_many_events") == 1
