"""The Taobao purchase target through the CLI only (issue 31): ``eval/cli_taobao.sh`` (ingest,
split, fit --target, classify, score) gives the eval's product row on the same split."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from behavior_rag.evaluation.harness import EvalConfig, run_eval
from behavior_rag.settings import Settings
from tests.conftest import ROOT, TAOBAO, need
from tests.test_eval_harness import _slice

KEY = "cli-taobao-test-key"


@pytest.mark.slow
def test_the_cli_commands_reproduce_the_eval_product_row(tmp_path, embed_home):
    data = _slice(need(TAOBAO), tmp_path / "taobao.csv", 6000)
    # one installation: the same pseudonym key (the stack's CV folds group sessions by user)
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
           "BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY": KEY,
           "BEHAVIOR_RAG": f"{sys.executable} -m behavior_rag.cli"}
    p = subprocess.run(["bash", str(ROOT / "eval" / "cli_taobao.sh"), str(data),
                        str(tmp_path / "work")], capture_output=True, text=True,
                       env=os.environ | env, timeout=1200, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    cli = json.loads(p.stdout.splitlines()[-1])["metrics"]
    res = run_eval(EvalConfig(task="taobao-intent", data=data, methods=["product"], seed=0,
                              out=tmp_path / "report"),
                   Settings(home=embed_home, embed={"backend": "onnx-int8"},
                            ingest={"pseudonym_key": KEY}, index_dir=tmp_path / "indexes"))
    row = next(r.metrics for r in res.results if r.method == "product")
    assert cli["n"] == row["n"] and cli["base_rate"] == row["base_rate"]
    assert abs(cli["auroc"] - row["auroc"]) <= 0.005
    assert abs(cli["aupr"] - row["aupr"]) <= 0.005
    assert abs(cli["f1_pos"] - row["f1_pos"]) <= 0.005
