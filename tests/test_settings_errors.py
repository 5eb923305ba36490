"""Settings come from BEHAVIOR_RAG_* env vars; errors carry their context."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from behavior_rag.errors import BehaviorRagError, DataError, IngestError
from behavior_rag.settings import Settings


def test_env_prefix_and_nested_sections(monkeypatch):
    monkeypatch.setenv("BEHAVIOR_RAG_INGEST__SESSION_GAP_MINUTES", "45")
    monkeypatch.setenv("BEHAVIOR_RAG_INGEST__MODE", "lenient")
    monkeypatch.setenv("BEHAVIOR_RAG_EMBED__BACKEND", "onnx-int8")
    s = Settings()
    assert (s.ingest.session_gap_minutes, s.ingest.mode, s.embed.backend) == (45, "lenient",
                                                                             "onnx-int8")


def test_invalid_setting_is_refused(monkeypatch):
    monkeypatch.setenv("BEHAVIOR_RAG_EMBED__BACKEND", "tensorflow")
    with pytest.raises(ValidationError):
        Settings()


def test_errors_carry_context():
    e = IngestError("bad", file="a.csv", row=7, field="price", value="x")
    assert isinstance(e, DataError) and isinstance(e, BehaviorRagError)
    assert e.to_dict() == {"error": "IngestError", "message": "bad", "file": "a.csv", "row": 7,
                           "field": "price", "value": "x"}
    assert str(e) == "a.csv row 7, field 'price' (value 'x'): bad"
