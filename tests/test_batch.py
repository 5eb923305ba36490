"""``behavior-rag batch embed|classify`` on a real two-node local Ray cluster (started here, one
CPU per node, stopped at teardown): shards equal what the in-process library makes, an index
built from the shards equals one built by ``BehaviorRAG``, and a missing Ray is said clearly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.batch import batch_embed, read_shards, shard_vectors
from behavior_rag.embed import get_embedder
from behavior_rag.embed.factory import resolve_backend
from behavior_rag.errors import ConfigError
from behavior_rag.ingest.store import open_store, write_store
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from tests.conftest import ROOT, cli_json

# fp32 ONNX: its vectors do not depend on which texts share an embedding batch (< 1e-6), so
# shards of 30 can be held to the whole-store call at 1e-5. The default (auto: openvino in bf16
# here, else onnx-int8) moves by up to ~7e-4 / ~2e-2 with the batching, in-process as well:
# it is held to the in-process batch run, which groups the texts the same way.
EMBED = "onnx"


def _settings(home: Path, backend: str = EMBED) -> Settings:
    return Settings(home=home, embed={"backend": backend}, llm={"backend": "none"},
                    classify={"llm": "never"})


def _env(home: Path, backend: str = EMBED) -> dict[str, str]:
    return {"BEHAVIOR_RAG_HOME": str(home), "BEHAVIOR_RAG_EMBED__BACKEND": backend,
            "BEHAVIOR_RAG_LLM__BACKEND": "none", "BEHAVIOR_RAG_CLASSIFY__LLM": "never",
            "PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(temp_dir: str) -> list[int]:
    """Pids of the processes of the cluster under ``temp_dir`` (each names it in its args)."""
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and temp_dir in (p / "cmdline").read_bytes().decode(
                    errors="replace"):
                pids.append(int(p.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def _stop(temp_dir: str) -> None:
    """End only this cluster's processes: SIGTERM, then SIGKILL what is left after 3 s
    (gcs_server and raylet wait on each other for longer)."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in _ours(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _ours(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_cluster():
    """A head (1 CPU, 100 MB object store) and one worker node (1 CPU) on this machine."""
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    temp_dir = tempfile.mkdtemp(prefix="brray-", dir="/tmp")  # short: Ray's unix sockets
    port = _free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = os.environ | {"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--object-store-memory", "100000000", "--temp-dir", temp_dir,
              "--disable-usage-stats"]
    try:
        subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard",
                        "false", *common], check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([ray_bin, "start", "--address", f"127.0.0.1:{port}", *common],
                       check=True, env=env, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "store"
    write_store(generate(90, seed=7).sessions, path)
    return path


@pytest.fixture()
def fresh_home(embed_home, tmp_path) -> Path:
    """A home with an empty embedding cache (so every vector is computed) and the exported
    models of ``embed_home`` (so nothing is exported again)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(embed_home / "models", target_is_directory=True)
    return home


def _in_process_index(home: Path, store: Path, path: Path) -> BehaviorRAG:
    st = open_store(store)
    rag = BehaviorRAG(_settings(home), path, fresh=True)
    rag.index_sessions(st.get_many(st.ids()))
    rag.save()
    return rag


def test_batch_embed_on_ray_gives_the_in_process_vectors_and_index(ray_cluster, store,
                                                                    fresh_home, tmp_path):
    out = tmp_path / "emb"
    [report] = cli_json(_env(fresh_home), "batch", "embed", str(store), "--out", str(out),
                        "--ray", ray_cluster, "--workers", "2", "--batch-size", "30",
                        "--index", str(tmp_path / "from-shards"))
    assert report["sessions"] == 90 and report["shards"] == 3 and report["workers"] == 2
    assert report["index"]["count"] == 90
    assert report["embedder"]["backend"] == resolve_backend(EMBED)

    other = fresh_home.parent / "other-home"  # its own embedding cache: vectors made here
    other.mkdir()
    (other / "models").symlink_to(fresh_home / "models")
    rag = _in_process_index(other, store, tmp_path / "in-process")
    ids, vecs = shard_vectors(out)
    assert ids == open_store(store).ids()  # shards come back in store order
    texts = [m["text"] for m in rag.index.metadata().sort("session_id").iter_rows(named=True)]
    here = get_embedder(_settings(other), cache=False).embed(texts)
    assert np.abs(vecs[np.argsort(ids)] - here).max() < 1e-5

    built = BehaviorRAG(_settings(fresh_home), tmp_path / "from-shards")
    assert built.index.hybrid == rag.index.hybrid
    for sid in ids[::9]:
        a = built.similar(session_id=sid, k=5)
        b = rag.similar(session_id=sid, k=5)
        assert [h.session_id for h in a] == [h.session_id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    assert set(built.sessions) == set(rag.sessions)


def test_default_backend_on_ray_equals_the_in_process_batch_run(ray_cluster, store, fresh_home,
                                                                 tmp_path, monkeypatch):
    [report] = cli_json(_env(fresh_home, "auto"), "batch", "embed", str(store), "--out",
                        str(tmp_path / "ray"), "--ray", ray_cluster, "--batch-size", "40")
    other = fresh_home.parent / "other-home"
    other.mkdir()
    (other / "models").symlink_to(fresh_home / "models")
    monkeypatch.setitem(sys.modules, "ray", None)  # in-process needs no Ray
    here = batch_embed(store, tmp_path / "here", settings=_settings(other, "auto"), batch_size=40)
    assert (here.ray, here.workers, here.shards) == (None, 1, 3)
    assert here.embedder.model_dump() == report["embedder"]
    (a_ids, a), (b_ids, b) = shard_vectors(tmp_path / "ray"), shard_vectors(tmp_path / "here")
    assert a_ids == b_ids and np.abs(a - b).max() < 1e-5


def test_ray_requested_but_not_installed_names_the_extra(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'behavior-rag\[ray\]'") as e:
        batch_embed(store, tmp_path / "emb", ray_address="auto")
    assert e.value.context["extra"] == "ray"
    assert not (tmp_path / "emb").exists()  # nothing was started or written


def test_the_cli_says_so_as_json_without_a_traceback(store, embed_home, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['behavior-rag'] + sys.argv[1:];"
            " from behavior_rag.cli import main; main()")
    p = subprocess.run([sys.executable, "-c", code, "batch", "embed", str(store), "--out",
                        str(tmp_path / "o"), "--ray", "auto"], capture_output=True, text=True,
                       env=os.environ | _env(embed_home), timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert json.loads(p.stderr.strip().splitlines()[-1])["extra"] == "ray"


def test_batch_embed_refuses_to_replace_a_folder_that_is_not_its_output(store, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a batch output"):
        batch_embed(store, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_batch_classify_on_ray_equals_in_process_classify_many(ray_cluster, embed_home,
                                                               tmp_path):
    from behavior_rag.evaluation import split_by_user

    sp = split_by_user(generate(200, seed=23).sessions, seed=0)
    ix = tmp_path / "ix"
    rag = BehaviorRAG(_settings(embed_home), ix)
    rag.fit(sp.train, sp.dev)
    write_store(sp.test, tmp_path / "new")

    out = tmp_path / "labels"
    [report] = cli_json(_env(embed_home), "batch", "classify", str(tmp_path / "new"), "--index",
                        str(ix), "--out", str(out), "--ray", ray_cluster, "--workers", "2",
                        "--batch-size", "16")
    assert report["sessions"] == len(sp.test) and report["workers"] == 2

    want = BehaviorRAG(_settings(embed_home), ix).classify_many(
        open_store(tmp_path / "new").get_many(open_store(tmp_path / "new").ids()))
    got = read_shards(out)
    assert got["session_id"].to_list() == [p.session_id for p in want]
    assert got["label"].to_list() == [p.label for p in want]
    assert np.allclose(got["confidence"].to_numpy(), [p.confidence for p in want], atol=1e-6)
    assert got["decided_by"].to_list() == [p.decided_by for p in want]
    assert sum(report["labels"].values()) == len(sp.test)
