"""Registries reachable by name from the CLI: an LLM backend and an embedder that another
package declares by entry point are listed by `behavior-rag plugins` and used by `--llm` /
settings, without touching behavior_rag (the LLM is a fake at the outside seam)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from behavior_rag.ingest.store import write_store
from behavior_rag.synth import generate

PLUGIN = '''
from behavior_rag.llm.base import LLMBackend


class Fixed(LLMBackend):
    """Answers every session with the same label scores."""

    name = "fixed"

    def score_options(self, messages, options, *, answer_prefix=""):
        return [0.0 if o == "deal_hunter" else -9.0 for o in options]

    def generate(self, messages, *, max_tokens=256, json_schema=None):
        return '{"label": "deal_hunter", "evidence": []}'


def make(settings):
    return Fixed()
'''


def _plugin(tmp_path):
    (tmp_path / "fixed_llm.py").write_text(PLUGIN)
    info = tmp_path / "fixed_llm-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fixed-llm\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [behavior_rag.llm_backends]
        fixed = fixed_llm:make
        """))
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}


def _cli(env, *args):
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                       text=True, env=os.environ | env, timeout=600)
    return p


def test_a_plugin_llm_backend_is_listed_and_used_by_name(tmp_path, embed_home):
    env = _plugin(tmp_path) | {"BEHAVIOR_RAG_HOME": str(embed_home),
                               "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}
    listed = [json.loads(line) for line in _cli(env, "plugins").stdout.splitlines()]
    mine = [r for r in listed if r["name"] == "fixed"]
    assert mine == [{"kind": "llm_backend", "name": "fixed", "from": "plugin fixed_llm:make",
                     "group": "behavior_rag.llm_backends"}]
    assert {"facts", "embed", "knn", "items"} <= {r["name"] for r in listed
                                                  if r["kind"] == "head"}
    data = generate(120, seed=8).sessions
    write_store(data[:100], tmp_path / "labelled")
    write_store(data[100:103], tmp_path / "new")
    p = _cli(env, "index", "build", str(tmp_path / "labelled"), "--index", str(tmp_path / "ix"))
    assert p.returncode == 0, p.stderr[-2000:]
    p = _cli(env, "classify", str(tmp_path / "new"), "--index", str(tmp_path / "ix"), "--llm",
             "fixed")
    assert p.returncode == 0, p.stderr[-2000:]
    preds = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(preds) == 3
    assert all(p["llm_scores"]["deal_hunter"] == 0.0 and p["source"] == "knn+llm" for p in preds)
    p = _cli(env, "classify", str(tmp_path / "new"), "--index", str(tmp_path / "ix"), "--llm",
             "nope")
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert p.returncode == 2 and err["field"] == "llm.backend" and "fixed" in err["message"]
