"""The tuned embedder (issue 18): real model, real sentence-transformers trainer, few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.embed.pairs import build_pairs, view
from behavior_rag.embed.sentence_transformers import PACKAGED_ID, SentenceTransformerEmbedder
from behavior_rag.embed.tune import (
    TuneConfig,
    save_tuned,
    train_model,
    tune_embedder,
)
from behavior_rag.embed.tuned import MANIFEST, TunedManifest, content_hash, tuned_id
from behavior_rag.errors import ConfigError
from behavior_rag.evaluation import split_by_user
from behavior_rag.index.base import EmbedderMismatch
from behavior_rag.ingest.store import write_store
from behavior_rag.render import render
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.vectors import agreement_at_k

CFG = TuneConfig(max_steps=8, batch_size=8, lr=1e-4, max_pairs_per_label=16, seed=3)


@pytest.fixture(scope="module")
def split():
    return split_by_user(generate(300, seed=23).sessions, seed=23, dev_frac=0.0, test_frac=0.4)


@pytest.fixture(scope="module")
def tuned(split, tmp_path_factory):
    """(in-memory model, saved folder, manifest): 8 labelled steps on the train users."""
    pb = build_pairs(split.train, labelled=True, batch_size=CFG.batch_size,
                     max_pairs_per_label=CFG.max_pairs_per_label, seed=CFG.seed)
    model, steps, _ = train_model(pb, config=CFG)
    out = tmp_path_factory.mktemp("tuned") / "model"
    man = save_tuned(model, out, TunedManifest(base="all-MiniLM-L6-v2", base_id=PACKAGED_ID,
                                               mode=pb.mode, pairs=len(pb.anchors), steps=steps,
                                               content_hash=""))
    return model, out, man


def _agreement(emb, split) -> float:
    q = emb.embed([render(s) for s in split.test])
    r = emb.embed([render(s) for s in split.train])
    return agreement_at_k(q, [s.label for s in split.test], [s.user_id for s in split.test],
                          r, [s.label for s in split.train], [s.user_id for s in split.train],
                          k=10)


def test_labelled_batches_never_repeat_a_label(split):
    pb = build_pairs(split.train, labelled=True, batch_size=8, max_pairs_per_label=16)
    label_of = {render(s): s.label for s in split.train}
    for b in pb.batches:
        labels = [label_of[pb.anchors[i]] for i in b]
        assert len(set(labels)) == len(labels) >= 2
        assert all(label_of[pb.positives[i]] == label_of[pb.anchors[i]] for i in b)


def test_tiny_run_raises_same_label_agreement(tuned, split, torch_embedder):
    base = _agreement(torch_embedder, split)
    after = _agreement(SentenceTransformerEmbedder(str(tuned[1])), split)
    assert after > base + 0.05, (base, after)


def test_save_load_gives_identical_vectors(tuned, split):
    model, out, man = tuned
    texts = [render(s) for s in split.test[:16]]
    mem = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    loaded = SentenceTransformerEmbedder(str(out))
    np.testing.assert_allclose(loaded.embed(texts), mem, atol=1e-6)
    assert loaded.info.id == tuned_id(out) == f"tuned:{man.content_hash[:16]}"
    assert json.loads((out / MANIFEST).read_text())["content_hash"] == content_hash(out)


def test_tuned_id_follows_the_weights(tuned, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tuned[1], copy)
    assert tuned_id(copy) == tuned_id(tuned[1])  # content, not the folder's name
    w = copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\x01")
    assert tuned_id(copy) != tuned_id(tuned[1])


@pytest.mark.slow
def test_tuned_exports_through_onnx(tuned, split, tmp_path):
    from behavior_rag.embed.onnx import OnnxEmbedder

    texts = [render(s) for s in split.test[:8]]
    torch_v = SentenceTransformerEmbedder(str(tuned[1])).embed(texts)
    for quantized, floor in ((False, 0.9999), (True, 0.98)):
        emb = OnnxEmbedder(str(tuned[1]), quantized=quantized, cache_root=tmp_path)
        assert emb.info.id == tuned_id(tuned[1])
        assert np.min(np.sum(emb.embed(texts) * torch_v, axis=1)) > floor


def test_base_index_refuses_tuned_then_cli_reembed_fixes_it(tuned, split, tmp_path):
    home, ix = tmp_path / "home", tmp_path / "ix"
    rag = BehaviorRAG(Settings(home=home), index_path=ix, fresh=True)
    rag.add_labelled(split.train[:60])
    rag.index_sessions(split.test[:20], split="query")
    rag.save()
    tuned_settings = Settings(home=home, embed={"model": str(tuned[1])})
    with pytest.raises(EmbedderMismatch) as e:
        _ = BehaviorRAG(tuned_settings, index_path=ix).index
    msg = str(e.value)
    assert PACKAGED_ID in msg and tuned_id(tuned[1]) in msg and "index reembed" in msg

    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", "index", "reembed",
                        "--index", str(ix), "--model", str(tuned[1])], capture_output=True,
                       text=True, timeout=300, env=os.environ | {"BEHAVIOR_RAG_HOME": str(home)})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["sessions"], out["old_id"], out["new_id"]) == (80, PACKAGED_ID,
                                                               tuned_id(tuned[1]))
    for settings in (tuned_settings, Settings(home=home)):  # the default adopts the index's
        after = BehaviorRAG(settings, index_path=ix)
        hits = after.similar(session_id=split.test[0].session_id, k=5)
        assert len(hits) == 5 and after.embedder.info.id == tuned_id(tuned[1])
    meta = after.index.metadata()
    assert meta.filter(meta["split"] == "train")["label"].null_count() == 0
    assert set(meta["split"].to_list()) == {"train", "query"}


def test_self_supervised_cli_on_unlabelled_sessions(split, tmp_path):
    store = tmp_path / "store"
    write_store([s.model_copy(update={"label": None}) for s in split.train[:40]], store)
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", "embed", "tune", str(store),
                        "--out", str(tmp_path / "ssl"), "--steps", "2", "--batch-size", "4"],
                       capture_output=True, text=True, timeout=300,
                       env=os.environ | {"BEHAVIOR_RAG_HOME": str(tmp_path / "home")})
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["mode"] == "self-supervised" and r["steps"] == 2 and r["peak_rss_mb"] > 0
    assert r["model_id"] == tuned_id(tmp_path / "ssl") and r["s_per_step"] > 0


def test_views_and_bad_input():
    import random

    s = generate(5, seed=4).sessions[0]
    v = view(s, random.Random(0), crop=0.5, drop=0.3)
    assert 2 <= len(v.events) <= len(s.events)
    with pytest.raises(ConfigError, match="two labels"):
        tune_embedder([s], "/nonexistent/never", config=TuneConfig(mode="labelled"))
    with pytest.raises(ConfigError) as e:
        build_pairs([s], labelled=False, batch_size=1)
    assert e.value.to_dict().get("field") == "batch_size"
