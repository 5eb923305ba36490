"""An index folder's ``config.json`` is trusted only as committed (issue 30, findings 2, 3, 4
and the ``config.json``-is-a-directory traceback of 7): each format-2 data folder holds
``commit.json`` with the sha256 of the config's canonical form, ``files`` must list every file
the format requires, the hybrid spec is checked against the facts, a folder with index data but
no ``config.json`` is never taken for a new index, and an index with nothing to classify with
says so. Then the corruption sweep over a fitted index: every single edit or damage is a clean
error naming a file (the CLI: exit 2, one JSON line, no traceback), or a documented no-op."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from behavior_rag import BehaviorRAG
from behavior_rag.errors import BehaviorRagError, ConfigError, StoreError
from behavior_rag.index.storage import COMMIT, config_digest
from behavior_rag.ingest.store import write_store
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.vectors import FACTS, HybridSpec


def _s(home) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    index={"kind": "flat"})


@pytest.fixture(scope="module")
def built(embed_home, tmp_path_factory):
    """A small hybrid index (the default) with labelled sessions, no fitted model."""
    path = tmp_path_factory.mktemp("trust") / "ix"
    rag = BehaviorRAG(_s(embed_home), path)
    rag.index_sessions(generate(30, seed=52).sessions)
    rag.save()
    return _s(embed_home), path


def _copy(src: Path, tmp_path: Path) -> tuple[Path, dict, Path]:
    dst = tmp_path / "ix"
    shutil.copytree(src, dst, symlinks=True)
    cfg = json.loads((dst / "config.json").read_text())
    return dst, cfg, dst / cfg["data"]


def _write(dst: Path, cfg: dict) -> None:
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))


def _open(s: Settings, path: Path) -> int:
    rag = BehaviorRAG(s, path)
    return len(rag.index)


def _names_config(e: pytest.ExceptionInfo) -> None:
    assert e.value.context["file"].endswith("config.json"), e.value.context


# ---- 1. config.json's own integrity: the commit record --------------------------------------
def test_each_commit_writes_a_commit_record_listed_in_files(built, tmp_path):
    s, src = built
    dst, cfg, data = _copy(src, tmp_path)
    assert cfg["format_version"] == 2
    assert {p.name for p in data.iterdir()} == {"faiss.index", "ids.npy", "metadata.parquet",
                                                COMMIT} == set(cfg["files"])
    rec = json.loads((data / COMMIT).read_text())
    assert rec["config_sha256"] == config_digest(cfg)
    assert cfg["files"][COMMIT]["sha256"] == hashlib.sha256(
        (data / COMMIT).read_bytes()).hexdigest()
    # a whitespace-only rewrite (or another key order) is the same config: a no-op
    (dst / "config.json").write_text(json.dumps(dict(reversed(cfg.items()))))
    assert _open(s, dst) == 30
    # and the next commit writes a new record for its own config
    rag = BehaviorRAG(s, dst)
    rag.index_sessions(generate(2, seed=53, prefix="more").sessions)
    new = rag.save()
    rec = json.loads((dst / new.data / COMMIT).read_text())
    assert rec["config_sha256"] == config_digest(json.loads((dst / "config.json").read_text()))
    assert _open(s, dst) == 32


def _drop_file_entry(name):
    def edit(cfg):
        del cfg["files"][name]
    return edit


def _set(path: str, value):
    def edit(cfg):
        *head, last = path.split(".")
        d = cfg
        for k in head:
            d = d[k]
        d[last] = value
    return edit


def _sdart(cfg):
    facts = cfg["hybrid"]["facts"]
    facts[facts.index("start_hour")] = "sdart_hour"


EDITS: dict[str, tuple[Callable[[dict], None], str | None]] = {
    # edit -> (how, the field the error names; None: the commit record's mismatch)
    "files entry of ids.npy deleted": (_drop_file_entry("ids.npy"), "files.ids.npy"),
    "files entry of faiss.index deleted": (_drop_file_entry("faiss.index"),
                                           "files.faiss.index"),
    "files entry of commit.json deleted": (_drop_file_entry(COMMIT), "files.commit.json"),
    "files emptied": (_set("files", {}), "files.commit.json"),
    "kind": (_set("kind", "hnsw"), None),
    "count": (_set("count", 29), None),
    "created": (_set("created", "2020-01-01T00:00:00Z"), None),
    "updated": (_set("updated", "2020-01-01T00:00:00Z"), None),
    "stores emptied": (_set("stores", {}), None),
    "a store's session count": (_set("stores.sessions.sessions", 3), None),
    "embedder id": (_set("embedder.id", "other/model"), None),
    "index setting": (_set("index.ef_search", 77), None),
    "hybrid weight": (_set("hybrid.weight", 0.9), None),
    "hybrid removed": (_set("hybrid", None), None),
    "an artifact added": (_set("artifacts", {"model": {"path": "model-0123456789ab"}}), None),
    "a legacy model slot added": (_set("model", "model-0123456789ab"), None),
    "an unknown key added": (_set("note", "hello"), None),
    "format_version deleted": (lambda c: c.pop("format_version"), None),
    # the schema is checked first: these name their field
    "sdart_hour": (_sdart, "hybrid.facts"),
    "hybrid scale all zero": (lambda c: c["hybrid"].update(scale=[0.0] * len(FACTS)),
                              "hybrid.scale"),
    "hybrid mean one short": (lambda c: c["hybrid"]["mean"].pop(), "hybrid.mean"),
    "format 1 claimed beside a commit record": (_set("format_version", 1), "format_version"),
    "an unknown format": (_set("format_version", 99), "format_version"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_any_edit_of_config_json_is_refused_naming_it(built, tmp_path, edit):
    s, src = built
    dst, cfg, _ = _copy(src, tmp_path)
    how, field = EDITS[edit]
    how(cfg)
    _write(dst, cfg)
    with pytest.raises(StoreError) as e:
        _open(s, dst)
    _names_config(e)
    if field is None:
        assert "does not match the commit" in e.value.message
    else:
        assert e.value.context.get("field") == field, e.value.to_dict()


def test_the_data_folder_must_hold_exactly_what_the_format_requires(built, tmp_path):
    s, src = built
    dst, cfg, data = _copy(src, tmp_path)
    (data / COMMIT).unlink()
    with pytest.raises(StoreError, match="commit.json is missing") as e:
        _open(s, dst)
    assert e.value.context["file"].endswith(COMMIT)

    dst, cfg, data = _copy(src, tmp_path / "b")
    (data / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match="does not have") as e:
        _open(s, dst)
    assert e.value.context["file"].endswith("notes.txt")

    dst, cfg, data = _copy(src, tmp_path / "c")
    (data / "ids.npy").unlink()
    (data / "ids.npy").symlink_to(src / cfg["data"] / "ids.npy")
    with pytest.raises(StoreError, match="not a plain file") as e:
        _open(s, dst)
    assert e.value.context["file"].endswith("ids.npy")


def test_another_commits_record_is_refused(built, tmp_path):
    """A data folder copied from another index (its commit.json and files entries too)."""
    s, src = built
    other = tmp_path / "other"
    rag = BehaviorRAG(s, other)
    rag.index_sessions(generate(30, seed=54).sessions)
    theirs = rag.save()
    dst, cfg, data = _copy(src, tmp_path)
    shutil.rmtree(data)
    shutil.copytree(other / theirs.data, data)
    cfg["files"] = json.loads(theirs.model_dump_json())["files"]
    _write(dst, cfg)
    with pytest.raises(StoreError, match="does not match the commit") as e:
        _open(s, dst)
    _names_config(e)


def test_a_format_1_folder_still_loads_and_the_next_commit_writes_format_2(built, tmp_path):
    """Known limit (index/storage.py): a folder claiming format 1 is checked as before."""
    s, src = built
    dst, cfg, data = _copy(src, tmp_path)
    (data / COMMIT).unlink()
    cfg["format_version"] = 1
    del cfg["files"][COMMIT]
    _write(dst, cfg)
    assert _open(s, dst) == 30
    rag = BehaviorRAG(s, dst)
    rag.delete_sessions([])
    new = rag.save()
    assert new.format_version == 2 and (dst / new.data / COMMIT).is_file()
    assert _open(s, dst) == 30


# ---- 2. the hybrid spec on its own -----------------------------------------------------------
@pytest.mark.parametrize("bad, field", [
    ({"facts": [*list(FACTS)[:-1], "sdart_hour"]}, "facts"),
    ({"facts": list(FACTS)[:-1]}, "facts"),
    ({"facts": list(reversed(FACTS))}, "facts"),
    ({"mean": [0.0] * (len(FACTS) - 1)}, "mean"),
    ({"mean": [float("nan")] * len(FACTS)}, "mean"),
    ({"scale": [1.0] * (len(FACTS) + 1)}, "scale"),
    ({"scale": [0.0] * len(FACTS)}, "scale"),
    ({"scale": [-1.0] * len(FACTS)}, "scale"),
    ({"scale": [float("inf")] * len(FACTS)}, "scale"),
])
def test_a_hybrid_spec_must_match_the_facts(bad, field):
    from pydantic import ValidationError

    good = {"facts": list(FACTS), "mean": [0.0] * len(FACTS), "scale": [1.0] * len(FACTS),
            "weight": 0.5}
    HybridSpec(**good)
    with pytest.raises(ValidationError) as e:
        HybridSpec(**(good | bad))
    assert e.value.errors()[0]["loc"] == (field,)


# ---- 3. no config.json, or not a file ---------------------------------------------------------
def test_a_deleted_config_json_is_not_a_new_empty_index(built, tmp_path):
    s, src = built
    dst, _, _ = _copy(src, tmp_path)
    (dst / "config.json").unlink()
    with pytest.raises(StoreError, match="not an index folder") as e:
        BehaviorRAG(s, dst)
    _names_config(e)
    # a new folder (or an empty one) is still a new index
    (tmp_path / "empty").mkdir()
    for new in (tmp_path / "new", tmp_path / "empty"):
        assert len(BehaviorRAG(s, new).index) == 0


def test_config_json_that_is_a_directory_is_a_clean_error(built, tmp_path):
    s, src = built
    dst, _, _ = _copy(src, tmp_path)
    (dst / "config.json").unlink()
    (dst / "config.json").mkdir()
    with pytest.raises(StoreError, match="is a directory") as e:
        _open(s, dst)
    _names_config(e)


def _cli(env, *args) -> tuple[int, dict | None, str]:
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                       text=True, timeout=300, env=os.environ | env)
    lines = p.stderr.strip().splitlines()
    try:
        err = json.loads(lines[-1]) if lines else None
    except ValueError:
        err = None
    return p.returncode, err, p.stderr


@pytest.mark.parametrize("damage", ["deleted", "a directory", "edited"])
def test_the_cli_refuses_a_damaged_config_json_as_json(built, tmp_path, embed_home, damage):
    s, src = built
    dst, cfg, _ = _copy(src, tmp_path)
    (dst / "config.json").unlink()
    if damage == "a directory":
        (dst / "config.json").mkdir()
    elif damage == "edited":
        cfg["count"] = 3
        _write(dst, cfg)
    sessions = generate(3, seed=55, prefix="q").sessions
    write_store(sessions, tmp_path / "q")
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
           "BEHAVIOR_RAG_LLM__BACKEND": "none"}
    commands = [["classify", str(tmp_path / "q"), "--index", str(dst)],
                ["profile", sessions[0].user_id, "--index", str(dst)],
                ["similar", "--text", "cheap items", "--index", str(dst)]]
    for args in commands if damage == "deleted" else commands[:1]:
        rc, err, stderr = _cli(env, *args)
        assert rc == 2 and "Traceback" not in stderr, (args, stderr[-2000:])
        assert err["error"] == "StoreError" and err["file"].endswith("config.json"), err


# ---- 4. nothing to classify with ------------------------------------------------------------
def test_classify_with_no_labels_and_no_model_says_so(embed_home, tmp_path):
    s = _s(embed_home)
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.index_sessions([x.model_copy(update={"label": None})
                        for x in generate(10, seed=56).sessions])
    rag.save()
    q = generate(1, seed=57).sessions[0]
    for r in (rag, BehaviorRAG(s, tmp_path / "ix")):
        with pytest.raises(ConfigError, match="nothing to classify with"):
            r.classify(q)


# ---- 5. the corruption sweep over a fitted index ---------------------------------------------
def _model(dst: Path) -> Path:
    cfg = json.loads((dst / "config.json").read_text())
    return dst / cfg["artifacts"]["model"]["path"]


def _cfg_edit(fn):
    def damage(dst: Path) -> None:
        cfg = json.loads((dst / "config.json").read_text())
        fn(cfg)
        _write(dst, cfg)
    return damage


def _data(dst: Path) -> Path:
    return dst / json.loads((dst / "config.json").read_text())["data"]


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _foreign_model(dst: Path) -> None:
    """Another fit's model folder copied over this one (same name, other manifest)."""
    man = _model(dst) / "manifest.json"
    m = json.loads(man.read_text())
    m["metric"] = "other"
    man.write_text(json.dumps(m))


def _config_dir(dst: Path) -> None:
    (dst / "config.json").unlink()
    (dst / "config.json").mkdir()


def _model_symlinked(dst: Path) -> None:
    m = _model(dst)
    shutil.move(m, dst.parent / "elsewhere")
    m.symlink_to(dst.parent / "elsewhere")


TOP_FIELDS = ["format_version", "embedder", "index", "kind", "count", "created", "updated",
              "data", "hybrid", "stores", "files", "artifacts"]
SWEEP: dict[str, Callable[[Path], None]] = {
    **{f"config.json {k} deleted": _cfg_edit(lambda c, k=k: c.pop(k)) for k in TOP_FIELDS},
    "config.json model artifact null": _cfg_edit(_set("artifacts.model", None)),
    "config.json model artifact removed": _cfg_edit(lambda c: c["artifacts"].pop("model")),
    "config.json model sha256 null": _cfg_edit(_set("artifacts.model.sha256", None)),
    "config.json model path of another fit": _cfg_edit(
        _set("artifacts.model.path", "model-0123456789ab")),
    "config.json data of another version": _cfg_edit(_set("data", "v-000009")),
    "config.json sdart_hour": _cfg_edit(_sdart),
    "config.json files emptied": _cfg_edit(_set("files", {})),
    "config.json a store segment renamed": _cfg_edit(
        lambda c: c["stores"]["sessions"]["segments"][0].update(events_file="seg-x.parquet")),
    "config.json truncated": lambda d: _truncate(d / "config.json"),
    "config.json not JSON": lambda d: (d / "config.json").write_text("{"),
    "config.json a directory": _config_dir,
    "config.json deleted": lambda d: (d / "config.json").unlink(),
    "commit.json deleted": lambda d: (_data(d) / COMMIT).unlink(),
    "commit.json edited": lambda d: (_data(d) / COMMIT).write_text(
        '{"format_version": 2, "config_sha256": "00"}'),
    "ids.npy truncated": lambda d: _truncate(_data(d) / "ids.npy"),
    "faiss.index truncated": lambda d: _truncate(_data(d) / "faiss.index"),
    "metadata.parquet bit-flipped": lambda d: _flip(_data(d) / "metadata.parquet"),
    "data folder deleted": lambda d: shutil.rmtree(_data(d)),
    "model folder deleted": lambda d: shutil.rmtree(_model(d)),
    "model manifest deleted": lambda d: (_model(d) / "manifest.json").unlink(),
    "model manifest edited": _foreign_model,
    "model folder symlinked": _model_symlinked,
}
NO_OPS = {  # documented: the same config, or files the index never reads
    "config.json re-indented": _cfg_edit(lambda c: None),
    "a stray file beside the data": lambda d: (d / "notes.txt").write_text("x"),
}


@pytest.fixture(scope="module")
def fitted_copy_src(fitted):
    rag, _, sp, ix = fitted
    return rag.settings, ix, sp.test[0]


@pytest.mark.parametrize("case", list(SWEEP))
def test_corruption_sweep_each_is_a_clean_error_naming_a_file(fitted_copy_src, tmp_path, case):
    s, src, q = fitted_copy_src
    dst, _, _ = _copy(src, tmp_path)
    assert BehaviorRAG(s, dst).classify(q).label  # intact: classifies
    SWEEP[case](dst)
    with pytest.raises(BehaviorRagError) as e:
        BehaviorRAG(s, dst).classify(q)
    f = e.value.context.get("file")
    assert f and Path(f).is_relative_to(dst), e.value.to_dict()  # a file of this folder


@pytest.mark.parametrize("case", list(NO_OPS))
def test_corruption_sweep_documented_no_ops(fitted_copy_src, tmp_path, case):
    s, src, q = fitted_copy_src
    dst, _, _ = _copy(src, tmp_path)
    want = BehaviorRAG(s, dst).classify(q)
    NO_OPS[case](dst)
    got = BehaviorRAG(s, dst).classify(q)
    assert got.label == want.label and got.probabilities == want.probabilities
