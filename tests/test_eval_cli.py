"""`behavior-rag eval` as a user meets it: the help names the methods that exist, and the
--human report keeps its Markdown intact."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from behavior_rag.cli.app import app
from behavior_rag.evaluation.methods import DEFAULT_METHODS, METHODS


def test_eval_help_lists_the_registered_methods_and_the_real_default():
    res = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "400"},
                             terminal_width=400)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for gone in ("fused", "stacked"):
        assert gone not in text
    for m in METHODS:
        assert f"{m} = " in text
    assert f"[default: {','.join(DEFAULT_METHODS)}]" in text


def test_eval_human_prints_markdown_image_links(tmp_path, embed_home):
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(embed_home),
                        "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", "eval", "--task",
                        "synth-personas", "--synth-n", "160", "--methods", "majority",
                        "--out", str(tmp_path / "r"), "--human"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "![confusion.png](confusion.png)" in p.stderr
    assert "!(" not in p.stderr
