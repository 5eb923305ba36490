"""An outcome target end to end through the CLI: the fitted model records the target, and
classify shows new sessions only what its prediction point allows (the leak test through
classify: a purchase after the point never reaches facts, evidence or explanation)."""

from __future__ import annotations

import json

from behavior_rag.heads.store import read_manifest
from behavior_rag.ingest.store import write_store
from behavior_rag.synth import generate
from behavior_rag.types import Event, Session
from tests.conftest import cli_json


def _store(path, sessions):
    write_store([Session.model_validate(s.model_dump() | {"label": None}) for s in sessions],
                path)


def test_fit_with_a_target_then_classify_sees_only_the_events_before_the_point(
        tmp_path, embed_home):
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}
    sessions = generate(300, seed=41).sessions
    _store(tmp_path / "train", sessions)
    cli_json(env, "fit", str(tmp_path / "train"), "--index", str(tmp_path / "ix"), "--target",
             "purchase", "--llm", "none", "--cascade", "never", "--heads", "facts")
    from behavior_rag import BehaviorRAG

    man = read_manifest(BehaviorRAG(index_path=tmp_path / "ix").model_path())
    assert man.target.name == "purchase" and str(man.target.input) == "before:cart,purchase"
    buyers = [s for s in generate(120, seed=42).sessions
              if any(e.type == "purchase" for e in s.events) and s.events[0].type == "view"][:10]
    cart_first = Session.model_validate(buyers[0].model_dump() | {"events": [
        Event(**(buyers[0].events[0].model_dump() | {"type": "cart"})),
        *buyers[0].events[1:]]})
    _store(tmp_path / "new", [*buyers, cart_first.model_copy(update={"session_id": "cf"})])
    preds = cli_json(env, "classify", str(tmp_path / "new"), "--index", str(tmp_path / "ix"),
                     "--llm", "none")
    by_id = {p["session_id"]: p for p in preds}
    for s in buyers:
        p = by_id[s.session_id]
        text = json.dumps(p["evidence"] + p["against"]) + p["explanation"]
        point = next(i for i, e in enumerate(s.events) if e.type in ("cart", "purchase"))
        assert all(i < point for e in p["evidence"] + p["against"] for i in e["events"])
        assert "purchase" not in text.replace("no_purchase", "")
    cf = by_id["cf"]
    assert cf["abstained"] and any("prediction point" in w for w in cf["warnings"])
