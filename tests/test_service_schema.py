"""Schemathesis against the service's own OpenAPI schema: generated requests (valid and not)
to every operation of a real server on loopback; none may get a 5xx.

Its own server and index (writes from generated requests must not leak into other tests).
Bounded: at most 25 examples per operation, no shrinking deadline.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from behavior_rag import BehaviorRAG, Settings  # noqa: E402
from behavior_rag.service.run import serve_in_background  # noqa: E402
from behavior_rag.synth import generate  # noqa: E402

KEY = "schema-key-0123456789abcdef"


@pytest.fixture(scope="module")
def live_url(embed_home, tmp_path_factory):
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 serve={"api_key": KEY, "max_concurrency": 2, "acquire_timeout_s": 5.0,
                        "max_batch": 8, "max_body_bytes": 256 * 1024})
    path = tmp_path_factory.mktemp("schema") / "index"
    rag = BehaviorRAG(s, path)
    rag.add_labelled(generate(80, seed=41).sessions)
    rag.save()
    with serve_in_background(BehaviorRAG(s, path), s.serve) as url:
        yield url


def _openapi() -> dict:
    # The schema is the app's own, built without a server or an index (nothing loads until
    # startup). Loaded at import, not from a fixture: schemathesis' fixture-based loader
    # (pytest.from_fixture) does not work with pytest 9 (it sets Node._nodeid, now gone).
    from behavior_rag.service.app import create_app

    s = Settings(llm={"backend": "none"}, serve={"api_key": KEY})
    return create_app(BehaviorRAG(s, index_path="/nonexistent/index"), s.serve).openapi()


schema = schemathesis.openapi.from_dict(_openapi())
schema.config.generation.update(max_examples=25)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True, database=None)
def test_no_server_errors(case, live_url):
    case.call_and_validate(base_url=live_url, headers={"X-API-Key": KEY},
                           checks=[not_a_server_error])
