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
    home.mkdir(parents=True, exist_ok=True)
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
