"""The behavior-rag command as a user runs it: JSON by default, --human for people."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, TAOBAO, need


def run(*args: str, env_extra: dict | None = None, cwd: Path | None = None,
        timeout: float = 300):
    env = os.environ | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture()
def env(tmp_path) -> dict:
    return {"BEHAVIOR_RAG_HOME": str(tmp_path / "home"), "BEHAVIOR_RAG_DATA_DIR": str(DATA)}


def test_ingest_then_render_json(tmp_path, env):
    out = tmp_path / "taobao"
    p = run("ingest", str(need(TAOBAO)), "--out", str(out), env_extra=env)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["format"] == "taobao" and report["events"] == 61_322
    p = run("render", str(out), "--limit", "3", env_extra=env)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 3 and all(r["text"].startswith("facts:") for r in rows)
    one = rows[1]["session_id"]
    p = run("render", str(out), "--session", one, "--human", env_extra=env)
    assert p.stdout.startswith(f"## {one}")


def test_pseudonyms_are_stable_across_runs_with_the_installation_key(tmp_path, env):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run("ingest", str(need(TAOBAO)), "--out", str(out), env_extra=env).returncode == 0
    first = json.loads(run("render", str(a), "--limit", "1", env_extra=env).stdout)
    second = json.loads(run("render", str(b), "--limit", "1", env_extra=env).stdout)
    assert first["user_id"] == second["user_id"]
    assert (Path(env["BEHAVIOR_RAG_HOME"]) / "pseudonym.key").stat().st_mode & 0o077 == 0


def test_synth_writes_labelled_store(tmp_path, env):
    out = tmp_path / "synth"
    p = run("synth", "--out", str(out), "--n", "200", "--seed", "3",
            "--mix", "deal_hunter=3,window_shopper=1", env_extra=env)
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    assert m["labels"] == {"deal_hunter": 150, "window_shopper": 50}
    assert m["info"]["synthetic"] is True


def test_bad_input_is_a_json_error_with_exit_code_2(tmp_path, env):
    p = run("ingest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"), env_extra=env)
    assert p.returncode == 2
    assert json.loads(p.stderr)["error"] in ("IngestError", "ConfigError")
    p = run("synth", "--out", str(tmp_path / "o"), "--mix", "space_pirate=1", env_extra=env)
    assert p.returncode == 2 and "space_pirate" in p.stderr


@pytest.fixture()
def demo_env(env, embed_home) -> dict:
    # The shared embedding home reuses the ONNX export and cache across tests.
    return env | {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}


def test_demo_on_real_data(demo_env, tmp_path):
    # the whole demo (ingest, index, fit with the LLM cascade, service): minutes on 2 cores
    p = run("demo", "--json", "--index", str(tmp_path / "ix"), env_extra=demo_env, timeout=900)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert "Taobao" in d["source"] and d["sessions"] > 5_000 and len(d["examples"]) == 3
    sim = d["similar"]
    assert sim["indexed"] == 1000 and (tmp_path / "ix" / "config.json").exists()
    users = [n["user_id"] for n in sim["neighbors"]]
    assert len(users) == len(set(users)) == 5 and sim["query_user"] not in users
    assert all(n["text"].startswith("facts:") for n in sim["neighbors"])
    c = d["classify"]
    assert c["llm"] == "local:smollm2-135m" and len(c["synthetic"]) == 3 and len(c["real"]) == 2
    for p in c["synthetic"] + c["real"]:  # the fitted heads decide, the LLM where unsure
        assert p["source"] in ("stack", "stack+llm") and p["decided_by"]
        # an unsure one abstains (threshold fitted on dev) and still names its closest label
        assert p["evidence"] and p["explanation"].startswith(
            f"Not sure ({p['confidence']:.0%}); closest: {p['label']}" if p["abstained"]
            else p["label"])
        # the evidence shown supports the label (it moved the facts head toward it), real
        # Taobao sessions included; what argued against it is listed apart
        if "facts" in p["decided_by"]:  # contributions of the facts head
            assert all(e["contribution"] > 0 for e in p["evidence"])
            assert all(e["contribution"] < 0 for e in p["against"])
        else:  # the stack left the facts head out: support is the label's own definition
            assert all("contribution" not in e for e in p["evidence"]) and not p["against"]
    assert c["fit"]["heads"] and c["held_out"]["accuracy"] > 0.8
    assert all(p["true_label"] for p in c["synthetic"])
    sv = c["service"]  # the demo ends with one call through the HTTP client
    assert sv["url"].startswith("http://127.0.0.1:") and sv["session_id"] == \
        c["synthetic"][0]["session_id"] and sv["label"] == c["synthetic"][0]["label"]


def test_demo_falls_back_to_synthetic(demo_env, tmp_path):
    p = run("demo", "--json", "--index", str(tmp_path / "ix"),
            env_extra=demo_env | {"BEHAVIOR_RAG_DATA_DIR": str(tmp_path / "none"),
                                  "BEHAVIOR_RAG_LLM__BACKEND": "none"})
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["source"].startswith("SYNTHETIC") and d["sessions"] == 1000
    assert len(d["similar"]["neighbors"]) == 5
    # the web view's command serves the demo's fitted index (tests/test_ui.py drives the pages)
    web = d["web_view"]
    assert web["url"].endswith("/ui/") and web["command"].startswith("behavior-rag serve")
    assert (Path(web["command"].split("--index ")[1].split()[0]) / "config.json").is_file()
