"""Shared fixtures: real data from ../shared/data, settings that never touch the user's home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from behavior_rag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEHAVIOR_RAG_DATA_DIR", ROOT.parent / "shared" / "data"))
TAOBAO = DATA / "taobao_userbehavior" / "UserBehavior.dev.csv"
REES46 = DATA / "rees46_sample" / "2019-Oct-sample.csv"
UCI = DATA / "uci_online_shoppers" / "online_shoppers_intention.dev.csv"
CDNOW_MASTER = DATA / "cdnow" / "CDNOW_master.txt"
CDNOW_SAMPLE = DATA / "cdnow" / "CDNOW_sample.txt"


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real data file not found: {path} (put ../shared/data beside the repo or "
                    "set BEHAVIOR_RAG_DATA_DIR)")
    return path


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", ingest={"pseudonym_key": "test-key"})


@pytest.fixture(scope="session")
def session_settings(tmp_path_factory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"), ingest={"pseudonym_key": "test-key"})


@pytest.fixture(scope="session")
def taobao(session_settings):
    from behavior_rag.ingest.load import load_events

    return load_events(need(TAOBAO), "taobao", settings=session_settings)


@pytest.fixture(scope="session")
def embed_home() -> Path:
    """A home for converted/exported models and the embedding cache, kept between runs in the
    git-ignored .cache/ (conversions take a minute; CI caches the folder)."""
    home = ROOT / ".cache" / "test-home"
    (home / "models").mkdir(parents=True, exist_ok=True)  # tests link to it before any export
    return home


@pytest.fixture(scope="session")
def torch_embedder():
    from behavior_rag.embed.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def int8_embedder(embed_home):
    from behavior_rag.embed.onnx import OnnxEmbedder

    return OnnxEmbedder(quantized=True, cache_root=embed_home / "models")


@pytest.fixture(scope="session")
def synth_sessions():
    from behavior_rag.synth import generate

    return generate(400, seed=11).sessions


@pytest.fixture(scope="session")
def fitted(embed_home, tmp_path_factory):
    """``BehaviorRAG.fit`` on synthetic personas (700 sessions split by user), shared by the
    fit and explanation tests: ``(rag, report, split, index folder)``; tests copy, not edit."""
    from behavior_rag.api import BehaviorRAG
    from behavior_rag.evaluation import split_by_user
    from behavior_rag.synth import generate

    sp = split_by_user(generate(700, seed=21).sessions, seed=0)
    ix = tmp_path_factory.mktemp("fit") / "ix"
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    rag = BehaviorRAG(s, ix)
    return rag, rag.fit(sp.train, sp.dev), sp, ix


def cli_json(env: dict, *args: str) -> list[dict]:
    """Run ``behavior-rag ARGS`` as a user would; assert success; parse its JSON lines."""
    import json
    import os
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                       text=True, env=os.environ | env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


@pytest.fixture(scope="session")
def tiny_adapter(embed_home, tmp_path_factory):
    """A LoRA adapter from a few fine-tuning steps (shared by the fine-tune and vLLM tests),
    with the data and settings it used. Short prompts on purpose: the 2-label purchase-intent
    taxonomy, one example, a 64-token session — a CPU step on full persona prompts takes ~1 min.
    """
    pytest.importorskip("peft", reason="the 'local' extra is not installed")
    from behavior_rag.evaluation import purchase_intent, split_by_user
    from behavior_rag.finetune import FinetuneConfig, finetune
    from behavior_rag.synth import generate
    from behavior_rag.taxonomy import load_taxonomy

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"},
                 classify={"taxonomy": "purchase_intent", "k_examples": 1,
                           "query_max_tokens": 64, "example_max_chars": 120})
    sp = split_by_user(purchase_intent(generate(200, seed=3).sessions, min_events=2), 3,
                       dev_frac=0.1, test_frac=0.1)
    out = tmp_path_factory.mktemp("adapter") / "intent-lora"
    res = finetune(sp.train, sp.dev, load_taxonomy("purchase_intent"), out=out, settings=s,
                   config=FinetuneConfig(max_steps=4, batch_size=4, eval_every=4, val_max=6,
                                         lr=1e-3, patience=1, max_examples=64, k_examples=1))
    return res, sp, s
