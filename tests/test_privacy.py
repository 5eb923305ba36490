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
    hits = [ln for ln in (out.out + out.err).splitlines() if "/v1/profiles/" in ln]
    assert hits and all(key not in ln for ln in hits) and "api_key=***" in hits[0]
    assert "someone" not in hits[0]  # the user id in the path is logged as its pseudonym


def _raw_user(sessions, raw: str):
    """``sessions`` re-owned by the raw id ``raw`` (as a shop's own export would have them)."""
    return [s.model_copy(update={"user_id": raw, "events": [
        e.model_copy(update={"user_id": raw}) for e in s.events]}) for s in sessions]


def _files_mention(folder, text: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_the_service_stores_pseudonyms_and_answers_lookups_by_the_raw_id(tmp_path, embed_home):
    from behavior_rag import Client
    from behavior_rag.service.run import serve_in_background

    key = "privacy-test-key-0123456789abcdef"
    raw = "shopper-4242@example.com"
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 serve={"api_key": key})
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.index_sessions(generate(20, seed=72).sessions)
    rag.save()
    mine = _raw_user(generate(3, seed=73, prefix="raw").sessions, raw)
    with serve_in_background(BehaviorRAG(s, tmp_path / "ix"), s.serve) as url:
        c = Client(url, api_key=key)
        c.index_sessions(mine)
        prof = c.profile(raw)
        hits = c.similar(session_id=mine[0].session_id, k=30)
        by_user = c.similar(user_id=raw, k=5)
    pseudo = BehaviorRAG(s, tmp_path / "ix").user_ids(raw)
    assert pseudo.startswith("u_") and prof.user_id == pseudo and prof.facts["n_sessions"].value == 3
    assert {h.user_id for h in hits if h.session_id in {m.session_id for m in mine}} == {pseudo}
    assert by_user and all(h.user_id != raw for h in hits + by_user)
    assert _files_mention(tmp_path / "ix", raw) == []  # nothing on disk holds the raw id
    assert _files_mention(tmp_path / "ix", "example.com") == []


def test_the_python_api_pseudonymises_what_it_is_given(tmp_path, embed_home):
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    raw = "cust-0099"
    ingested = generate(15, seed=74).sessions
    rag = BehaviorRAG(s, tmp_path / "ix")
    ids = rag.user_ids
    assert ids(ids(raw)) == ids(raw) != raw  # a pseudonym is kept, so ingest's ids stay
    rag.index_sessions([*ingested, *_raw_user(generate(2, seed=75, prefix="r").sessions, raw)])
    rag.add_history(_raw_user(generate(1, seed=76, prefix="h").sessions, raw))
    rag.save()
    back = BehaviorRAG(s, tmp_path / "ix")
    assert {x.user_id for x in back.sessions.values()} >= {ids(raw)}
    assert raw not in {x.user_id for x in back.sessions.values()}
    assert back.profile(raw).facts["n_sessions"].value == 2
    assert back.profile(ids(raw)).facts["n_sessions"].value == 2
    assert [x.user_id for x in back.sessions.values() if x.user_id != ids(raw)] == \
        [ids(x.user_id) for x in ingested]  # the synthetic ids, hashed once, then stable
    assert _files_mention(tmp_path / "ix", raw) == []
    off = BehaviorRAG(s.model_copy(update={"ingest": s.ingest.model_copy(
        update={"pseudonymize": False})}), tmp_path / "raw")
    off.index_sessions(_raw_user(generate(1, seed=77).sessions, raw))
    assert off.user_ids(raw) == raw and off.sessions.of_user(raw)  # the user opted out
