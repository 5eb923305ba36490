"""An index folder is checked on load: every file against config.json's sizes and checksums,
the data folder inside the index, and faiss.index / ids.npy / metadata against each other.
Each damage is a clear StoreError naming the file (a JSON error from the CLI), never a
traceback or a silently wrong index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from behavior_rag import BehaviorRAG
from behavior_rag.errors import StoreError
from behavior_rag.settings import Settings
from behavior_rag.synth import generate


@pytest.fixture(scope="module")
def built(embed_home, tmp_path_factory):
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 index={"kind": "flat"})
    path = tmp_path_factory.mktemp("integrity") / "ix"
    rag = BehaviorRAG(s, path)
    rag.index_sessions(generate(30, seed=51).sessions)
    rag.save()
    return s, path


def _copy(built, tmp_path):
    s, path = built
    dst = tmp_path / "ix"
    shutil.copytree(path, dst)
    cfg = json.loads((dst / "config.json").read_text())
    return s, dst, cfg, dst / cfg["data"]


def _load(s, path):
    return len(BehaviorRAG(s, path).index)


def _unsummed(dst, cfg):
    """As an index written before checksums and commit records (format 1, still read): the
    structural checks must still hold."""
    cfg.pop("files")
    cfg["format_version"] = 1
    (dst / cfg["data"] / "commit.json").unlink(missing_ok=True)
    (dst / "config.json").write_text(json.dumps(cfg))


def test_an_intact_copy_loads(built, tmp_path):
    s, dst, _, _ = _copy(built, tmp_path)
    assert _load(s, dst) == 30


def test_a_missing_faiss_index_is_refused(built, tmp_path):
    s, dst, cfg, data = _copy(built, tmp_path)
    (data / "faiss.index").unlink()
    with pytest.raises(StoreError, match="missing") as e:
        _load(s, dst)
    assert e.value.context["file"].endswith("faiss.index")
    _unsummed(dst, cfg)
    with pytest.raises(StoreError, match="faiss.index is missing"):
        _load(s, dst)


def test_a_byte_flip_in_metadata_is_refused(built, tmp_path):
    s, dst, _, data = _copy(built, tmp_path)
    raw = bytearray((data / "metadata.parquet").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (data / "metadata.parquet").write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="checksum") as e:
        _load(s, dst)
    assert e.value.context["file"].endswith("metadata.parquet")


@pytest.mark.parametrize("where", ["../other/v-000002", "/etc", "../../etc", "v-1"])
def test_a_data_path_outside_the_folder_is_refused(built, tmp_path, where):
    s, dst, cfg, data = _copy(built, tmp_path)
    shutil.copytree(data, tmp_path / "other" / "v-000002")
    cfg["data"] = where
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StoreError, match="not a v-NNNNNN folder of this index"):
        _load(s, dst)


@pytest.mark.parametrize("where", ["../other/model-0123456789ab", "/etc", "model",
                                   "sessions"])
def test_artifacts_outside_the_folder_are_refused(built, tmp_path, where):
    s, dst, cfg, _ = _copy(built, tmp_path)
    _unsummed(dst, cfg)  # format 2 refuses any edit of config.json (test_config_trust.py)
    cfg["artifacts"] = {"model": {"path": where}}
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StoreError, match="not a folder of this index") as e:
        _ = BehaviorRAG(s, dst).classifier
    assert e.value.context["field"] == "artifacts.model"


@pytest.mark.parametrize("where", ["/etc/passwd", "../fusion-0123456789ab.json",
                                   "fusion-0123456789ab.json"])
def test_retired_fusion_files_are_never_read_and_the_next_commit_removes_them(
        built, tmp_path, where):
    """An index from before the default model names fusion weights: they are ignored (the
    unfitted index classifies with the kNN vote), and the next commit removes a fusion file
    inside the folder (never anything outside it)."""
    s, dst, cfg, _ = _copy(built, tmp_path)
    _unsummed(dst, cfg)  # only an older index names fusion weights
    (dst / "fusion-0123456789ab.json").write_text('{"w_llm": 0.9}')
    (tmp_path / "fusion-0123456789ab.json").write_text("outside")
    cfg["fusion"] = where
    (dst / "config.json").write_text(json.dumps(cfg))
    rag = BehaviorRAG(s, dst)
    assert rag.classifier.model is None
    assert rag.classify(generate(1, seed=9).sessions[0]).source == "knn"
    rag.delete_sessions([])  # any change, then the commit
    rag.save()
    assert not (dst / "fusion-0123456789ab.json").exists()
    assert (tmp_path / "fusion-0123456789ab.json").read_text() == "outside"
    assert "fusion" not in json.loads((dst / "config.json").read_text())


def test_faiss_of_another_dim_or_size_and_a_wrong_kind_are_refused(built, tmp_path):
    import faiss

    s, dst, cfg, data = _copy(built, tmp_path)
    _unsummed(dst, cfg)
    faiss.write_index(faiss.IndexFlatIP(16), str(data / "faiss.index"))
    with pytest.raises(StoreError, match="dim 16"):
        _load(s, dst)
    shutil.copy(built[1] / cfg["data"] / "faiss.index", data / "faiss.index")
    ix = faiss.read_index(str(data / "faiss.index"))
    ix.remove_ids(np.arange(5, dtype=np.int64))
    faiss.write_index(ix, str(data / "faiss.index"))
    with pytest.raises(StoreError, match="holds 25 vectors, ids.npy lists 30"):
        _load(s, dst)
    shutil.copy(built[1] / cfg["data"] / "faiss.index", data / "faiss.index")
    cfg["kind"] = "hnsw"
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StoreError, match="config says kind 'hnsw'"):
        _load(s, dst)


@pytest.mark.parametrize("bad", [np.zeros((30, 2), dtype=np.int64), np.zeros(30)])
def test_ids_that_are_not_1d_int64_are_refused(built, tmp_path, bad):
    s, dst, cfg, data = _copy(built, tmp_path)
    _unsummed(dst, cfg)
    np.save(data / "ids.npy", bad, allow_pickle=False)
    with pytest.raises(StoreError, match="not 1-D int64"):
        _load(s, dst)


def test_the_cli_says_so_as_json(built, tmp_path, embed_home):
    _, dst, _, data = _copy(built, tmp_path)
    (data / "faiss.index").unlink()
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", "index", "info", "--index",
                        str(dst)], capture_output=True, text=True, timeout=300,
                       env=os.environ | {"BEHAVIOR_RAG_HOME": str(embed_home),
                                         "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert err["error"] == "StoreError" and err["file"].endswith("faiss.index")
