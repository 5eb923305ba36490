"""Raw user ids and API keys stay out of what we write and log; a guessable key is refused
off loopback."""

from __future__ import annotations

import httpx
import pytest

from behavior_rag import BehaviorRAG, load_events
from behavior_rag.errors import ConfigError
from behavior_rag.service.auth import check_auth_config
from behavior_rag.settings import ServeSettings, Settings
from behavior_rag.synth import generate


def test_a_short_key_is_refused_off_loopback_only():
    with pytest.raises(ConfigError, match="at least 16") as e:
        check_auth_config(ServeSettings(host="0.0.0.0", api_key="x"))
    assert e.value.context["field"] == "serve.api_key"
    check_auth_config(ServeSettings(host="127.0.0.1", api_key="x"))  # a local demo may
    check_auth_config(ServeSettings(host="0.0.0.0", api_key="k" * 16))


def test_row_errors_never_carry_a_raw_user_id(tmp_path, settings):
    p = tmp_path / "ev.csv"
    p.write_bytes(b"user_id,timestamp,event_type,item_id\n"
                  b"alice@example.com,2024-01-01 10:00:00,view,1\n"
                  b"bob\xff@example.com,2024-01-01 10:01:00,view,2\n")
    res = load_events(p, "generic", settings=settings, mode="lenient")
    bad = [x for x in res.report.examples if x.field == "user_id"]
    assert bad and all("example.com" not in (x.value or "") for x in bad)
    assert "example.com" not in res.report.model_dump_json()
    assert all("example.com" not in s.user_id for s in res.sessions)


def test_a_key_sent_in_the_query_string_is_not_logged(tmp_path, embed_home, capfd):
    from behavior_rag.service.run import serve_in_background

    key = "privacy-test-key-0123456789abcdef"
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 serve={"api_key": key})
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.index_sessions(generate(10, seed=71).sessions)
    rag.save()
    with serve_in_background(BehaviorRAG(s, tmp_path / "ix"), s.serve, log_level="info") as url:
        r = httpx.get(url + f"/v1/profiles/someone?api_key={key}&x=1", timeout=30)
        assert r.status_code in (401, 404, 422)
    out = capfd.readouterr()
    hits = [ln for ln in (out.out + out.err).splitlines() if "/v1/profiles/someone" in ln]
    assert hits and all(key not in ln for ln in hits) and "api_key=***" in hits[0]
