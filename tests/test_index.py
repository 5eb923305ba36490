"""The FAISS session index: stable ids under upsert/delete, filters before scoring, atomic saves."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import StoreError
from behavior_rag.index.base import Filter, SessionMeta, session_key
from behavior_rag.index.faiss_index import EmbedderMismatch, FaissSessionIndex
from behavior_rag.settings import IndexSettings

INFO = EmbedderInfo(id="test/model", dim=32, backend="torch", max_tokens=64)
KINDS = [{"kind": "flat"}, {"kind": "flat", "sq8": True}, {"kind": "hnsw"},
         {"kind": "hnsw", "sq8": True}, {"kind": "ivf"}, {"kind": "ivf", "sq8": True}]


def unit(n: int, seed: int = 0, dim: int = 32) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def metas(n: int, start: int = 0, labels=("a", "b", None)) -> list[SessionMeta]:
    return [SessionMeta(id=session_key(f"s{i}"), session_id=f"s{i}", user_id=f"u{i % 40}",
                        label=labels[i % len(labels)], categories=[f"c{i % 7}"],
                        has_purchase=i % 5 == 0) for i in range(start, start + n)]


def build(n: int = 2000, **spec) -> tuple[FaissSessionIndex, np.ndarray]:
    ix = FaissSessionIndex(INFO, IndexSettings(**spec))
    x = unit(n)
    ix.upsert(x, metas(n))
    return ix, x


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: "+".join(str(v) for v in s.values()))
def test_upsert_and_delete_keep_ids_stable_and_searchable(spec):
    ix, x = build(**spec)
    own = [h[0].meta.session_id for h in ix.search(x[:50], 1)]
    assert own == [f"s{i}" for i in range(50)]
    assert ix.delete([session_key(f"s{i}") for i in range(0, 20)]) == 20
    assert ix.get("s3") is None and len(ix) == 1980
    hits = ix.search(x[20:50], 1)
    assert [h[0].meta.session_id for h in hits] == [f"s{i}" for i in range(20, 50)]
    assert all(h.meta.session_id not in {f"s{i}" for i in range(20)}
               for row in ix.search(x[:20], 10) for h in row)
    # upsert replaces: s25 now carries s999's old vector direction... and keeps its id
    new = unit(1, seed=99)
    ix.upsert(new, [m.model_copy(update={"label": "z"}) for m in metas(1, 25)])
    top = ix.search(new, 1)[0][0]
    assert (top.meta.session_id, top.id, top.meta.label) == ("s25", session_key("s25"), "z")
    assert ix.search(x[25:26], 1)[0][0].meta.session_id != "s25"
    assert len(ix) == 1980


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: "+".join(str(v) for v in s.values()))
def test_filtered_search_returns_k_when_k_match(spec):
    ix, x = build(**spec)
    # exactly 12 sessions pass: user u7 (i % 40 == 7 -> 50 sessions) with label 'b' ...
    flt = Filter(users=["u7"], labels=["b"])
    passing = {m.session_id for m in metas(2000) if m.user_id == "u7" and m.label == "b"}
    for q in x[:5]:
        hits = ix.search(q[None, :], 10, flt)[0]
        assert len(hits) == 10 and {h.meta.session_id for h in hits} <= passing
        hits = ix.search(q[None, :], 100, flt)[0]
        assert {h.meta.session_id for h in hits} == passing  # all of them, when k exceeds them
    # a broad filter on the ANN path: results equal exact search restricted to the filter
    flt = Filter(labelled=True, exclude_users=["u1"], has_purchase=False)
    allowed = [i for i, m in enumerate(metas(2000)) if m.label is not None
               and m.user_id != "u1" and not m.has_purchase]
    exact = np.argsort(-(x[allowed] @ x[0]))[:10]
    got = {h.meta.session_id for h in ix.search(x[:1], 10, flt)[0]}
    assert len(got) == 10
    assert all(h.meta.label is not None and h.meta.user_id != "u1" and not h.meta.has_purchase
               for h in ix.search(x[:1], 10, flt)[0])
    truth = {f"s{allowed[i]}" for i in exact}
    if spec == {"kind": "flat"}:
        assert got == truth  # exact search stays exact under a filter
    elif spec["kind"] == "hnsw":
        assert len(got & truth) >= 8  # the graph walk honours the filter without losing recall
    # IVF probes 16 of ~180 lists: on structureless random vectors its recall is low by design


def test_category_and_time_filters(synth_sessions):
    from behavior_rag.index.build import meta_for

    ms = [meta_for(s, f"text {i}") for i, s in enumerate(synth_sessions)]
    ix = FaissSessionIndex(INFO)
    x = unit(len(ms), seed=3)
    ix.upsert(x, ms)
    cut = sorted(m.start for m in ms)[len(ms) // 2]
    flt = Filter(categories=["toys.games", "jewelry.necklace"], start_from=cut)
    hits = ix.search(x[:3], 15, flt)
    for row in hits:
        assert len(row) == 15
        for h in row:
            assert h.meta.start >= cut
            assert {"toys.games", "jewelry.necklace"} & set(h.meta.categories)


def test_reload_equals_before_save(tmp_path):
    for spec in ({"kind": "hnsw"}, {"kind": "ivf", "sq8": True}):
        ix, x = build(**spec)
        ix.delete([session_key("s5")])
        before = [[(h.id, round(h.score, 6)) for h in row] for row in ix.search(x[:30], 10)]
        ix.save(tmp_path / spec["kind"])
        back = FaissSessionIndex.load(tmp_path / spec["kind"], expect=INFO)
        after = [[(h.id, round(h.score, 6)) for h in row] for row in back.search(x[:30], 10)]
        assert after == before and len(back) == len(ix) and back.kind == spec["kind"]
        assert back.get("s6") == ix.get("s6") and back.get("s5") is None


def test_other_embedder_is_refused_on_load(tmp_path):
    ix, _ = build(100, kind="flat")
    ix.save(tmp_path / "ix")
    for other in (INFO.model_copy(update={"id": "other/model"}),
                  INFO.model_copy(update={"dim": 64})):
        with pytest.raises(EmbedderMismatch) as e:
            FaissSessionIndex.load(tmp_path / "ix", expect=other)
        assert "test/model" in str(e.value) and "rebuild" in str(e.value)
    assert len(FaissSessionIndex.load(tmp_path / "ix", expect=INFO)) == 100


def test_index_folder_describes_itself(tmp_path):
    import json

    ix, _ = build(300, kind="hnsw", sq8=True)
    ix.save(tmp_path / "ix")
    cfg = json.loads((tmp_path / "ix" / "config.json").read_text())
    assert cfg["embedder"] == INFO.model_dump() and cfg["count"] == 300
    assert cfg["kind"] == "hnsw" and cfg["index"]["sq8"] is True
    assert (tmp_path / "ix" / cfg["data"] / "faiss.index").exists()
    ix.save(tmp_path / "ix")
    assert [p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith("v-")] == [
        "v-000002"]
    with pytest.raises(StoreError):
        FaissSessionIndex.load(tmp_path / "nothing")


def test_auto_kind_moves_from_flat_to_hnsw_past_the_threshold():
    ix = FaissSessionIndex(INFO, IndexSettings(kind="auto", auto_threshold=500))
    x = unit(800)
    ix.upsert(x[:400], metas(400))
    assert ix.kind == "flat"
    ix.upsert(x[400:], metas(400, 400))
    assert ix.kind == "hnsw" and len(ix) == 800
    assert [h[0].meta.session_id for h in ix.search(x[:10], 1)] == [f"s{i}" for i in range(10)]


def test_heavy_deletes_compact_without_moving_ids():
    ix, x = build(3000, kind="hnsw")
    ix.delete([session_key(f"s{i}") for i in range(0, 3000, 2)])  # half of them
    assert ix.vectors_.n_dead == 0 and ix.vectors_.index.ntotal == 1500  # rebuilt
    assert [h[0].id for h in ix.search(x[1:40:2], 1)] == [session_key(f"s{i}")
                                                          for i in range(1, 40, 2)]


SAVER = textwrap.dedent("""
    import sys, numpy as np
    from behavior_rag.embed.base import EmbedderInfo
    from behavior_rag.index.base import SessionMeta, session_key
    from behavior_rag.index.faiss_index import FaissSessionIndex
    from behavior_rag.settings import IndexSettings
    path = sys.argv[1]
    info = EmbedderInfo(id="test/model", dim=32, backend="torch", max_tokens=64)
    ix = FaissSessionIndex(info, IndexSettings(kind="hnsw"))
    rng = np.random.default_rng(1)
    for batch in range(10_000):
        x = rng.standard_normal((400, 32)).astype("float32")
        ix.upsert(x / np.linalg.norm(x, axis=1, keepdims=True),
                  [SessionMeta(id=session_key(f"b{batch}-{i}"), session_id=f"b{batch}-{i}",
                               user_id="u") for i in range(400)])
        ix.save(path)
        print(f"ACK {batch}", flush=True)
""")


@pytest.mark.parametrize("delay", [0.5, 1.3, 2.2])
def test_save_killed_midway_leaves_last_commit_loadable(tmp_path, delay):
    path = tmp_path / "ix"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    acked = -1
    start = time.monotonic()
    while time.monotonic() - start < 120:
        line = proc.stdout.readline()
        if line.startswith("ACK"):
            acked = int(line.split()[1])
            if acked >= 1 and time.monotonic() - start > delay:
                break
    time.sleep(0.05 * (1 + acked % 3))  # land somewhere inside the next save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read()  # saves acknowledged after we stopped reading still count
    acked = max([acked] + [int(x.split()[1]) for x in rest.splitlines() if x.startswith("ACK")])
    ix = FaissSessionIndex.load(path, expect=INFO)
    assert len(ix) >= 400 * (acked + 1)
    for b in range(acked + 1):
        assert ix.get(f"b{b}-0") is not None and ix.get(f"b{b}-399") is not None


def test_gpu_search_matches_cpu():
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        pytest.skip("GPU FAISS not available here (needs the 'gpu' extra, faiss-gpu, and an "
                    "NVIDIA GPU); the CPU index is used")
    cpu, x = build(3000, kind="flat", gpu="off")
    gpu, _ = build(3000, kind="flat", gpu="on")
    a = [[h.id for h in r] for r in cpu.search(x[:20], 10)]
    b = [[h.id for h in r] for r in gpu.search(x[:20], 10)]
    assert a == b and gpu.vectors_._gpu is not None


def test_the_knn_filter_fast_path_matches_a_full_scan():
    from behavior_rag.index.base import Filter, SessionMeta
    from behavior_rag.index.metadata import MetadataStore

    store = MetadataStore()
    for i in range(60):
        store.put(SessionMeta(id=1000 - i * 7, session_id=f"s{i}", user_id=f"u{i % 9}",
                              label=None if i % 4 == 0 else "a"))
    f = store.frame()
    for users, sessions in (([], []), (["u3"], []), (["u3", "u5"], ["s10", "s0"]),
                            (["nobody"], ["s1"])):
        expect = f.filter(f["label"].is_not_null() & ~f["user_id"].is_in(users)
                          & ~f["session_id"].is_in(sessions))["id"].sort().to_list()
        flt = Filter(labelled=True, exclude_users=users, exclude_sessions=sessions)
        assert store.matching(flt).tolist() == expect
    assert 993 in store.matching(Filter(labelled=True)).tolist()
    store.remove(993)  # changes invalidate the cached labelled set
    assert 993 not in store.matching(Filter(labelled=True)).tolist()


def test_metadata_folds_new_rows_into_its_frame_and_keeps_every_lookup(monkeypatch):
    from behavior_rag.index import metadata as md
    from behavior_rag.index.base import Filter, SessionMeta

    monkeypatch.setattr(md, "FOLD_EVERY", 7)
    m = md.MetadataStore()
    for i in range(30):
        m.put(SessionMeta(id=i, session_id=f"s{i}", user_id=f"u{i % 4}",
                          label="x" if i % 3 == 0 else None))
        if i == 12:
            m.by_session("s1"), m.ids_of_user("u1")  # caches built midway stay right
    m.put(SessionMeta(id=5, session_id="s5", user_id="u9"))  # replaces a folded row
    assert len(m._new) < 7 and len(m) == 30  # folded as it went
    assert m.get(5).user_id == "u9" and m.by_session("s29").id == 29
    assert sorted(m.ids_of_user("u1")) == [i for i in range(30) if i % 4 == 1 and i != 5]
    assert m.ids_of_user("u9") == [5]
    assert m.matching(Filter(labelled=True)).tolist() == [i for i in range(30) if i % 3 == 0
                                                          and i != 5]
    assert m.frame().height == 30 and m.frame()["id"].n_unique() == 30


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_odd_widths_are_stored_padded_and_answer_the_same(tmp_path, spec):
    # hybrid vectors are 384 + 15 wide: FAISS's SIMD scalar-quantizer code wants a multiple of 8
    from behavior_rag.index import faiss_index as fi

    info = INFO.model_copy(update={"dim": 31})
    x = unit(1200, dim=31)
    ix = FaissSessionIndex(info, IndexSettings(**spec))
    ix.upsert(x, metas(1200))
    assert ix.vectors_.index.d == 32
    hits = ix.search(x[:20], 1)
    assert [h[0].meta.session_id for h in hits] == [f"s{i}" for i in range(20)]
    got = ix.vectors([session_key("s3")])
    assert got.shape == (1, 31) and np.allclose(got[0], x[3], atol=0.02)
    ix.save(tmp_path / "padded")
    again = fi.FaissSessionIndex.load(tmp_path / "padded", info)
    assert [h[0].meta.session_id for h in again.search(x[:20], 1)] == [
        f"s{i}" for i in range(20)]


def test_an_index_written_before_padding_still_loads_and_grows(tmp_path, monkeypatch):
    from behavior_rag.index import faiss_index as fi
    from behavior_rag.index import faiss_vectors as fv

    info = INFO.model_copy(update={"dim": 31})
    x = unit(300, dim=31)
    with monkeypatch.context() as m:  # as the code before padding wrote it
        m.setattr(fv, "padded", lambda d: d)
        old = FaissSessionIndex(info, IndexSettings(kind="flat", sq8=True))
        old.upsert(x[:200], metas(200))
        assert old.vectors_.index.d == 31
        old.save(tmp_path / "old")
    ix = fi.FaissSessionIndex.load(tmp_path / "old", info)
    ix.upsert(x[200:], metas(100, start=200))  # added at the width the file has
    assert ix.vectors_.index.d == 31
    hits = ix.search(x[[5, 250]], 1)
    assert [h[0].meta.session_id for h in hits] == ["s5", "s250"]


def test_an_ivf_index_trained_on_a_small_first_batch_retrains_as_it_grows():
    from behavior_rag.index.faiss_vectors import FaissVectors

    x = unit(4000)
    v = FaissVectors(32, IndexSettings(kind="ivf"))
    v.add(np.arange(200), x[:200])  # e.g. the labelled sessions of a fit
    assert v.index.nlist == int(4 * np.sqrt(200))
    v.add(np.arange(200, 900), x[200:900])  # 4.5x what it was trained at: retrained
    assert v.index.nlist == int(4 * np.sqrt(900)) and v.trained_at == 900
    assert v.search(x[[3, 850]], 1)[1][:, 0].tolist() == [3, 850]  # ids survive the rebuild
    fixed = FaissVectors(32, IndexSettings(kind="ivf", nlist=8))
    fixed.add(np.arange(200), x[:200])  # fewer than 39 points per list
    fixed.add(np.arange(200, 900), x[200:900])
    assert fixed.trained_at == 900  # retrained once, now well trained
    fixed.add(np.arange(900, 4000), x[900:])
    assert fixed.trained_at == 900 and fixed.index.nlist == 8  # and left alone after that
