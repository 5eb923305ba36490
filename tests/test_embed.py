"""Embedders with the real packaged all-MiniLM-L6-v2: backends agree, vectors are unit float32,
the content cache makes unchanged texts free, and nothing reaches for a model hub."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from behavior_rag.embed.cache import CachedEmbedder
from behavior_rag.render import render


@pytest.fixture(scope="module")
def texts(taobao):
    return [render(s) for s in taobao.sessions[:60]] + ["", "a", "viewed item 1 x4"]


def test_torch_vectors_are_unit_float32_and_deterministic(torch_embedder, texts):
    a = torch_embedder.embed(texts)
    assert a.shape == (len(texts), 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(torch_embedder.embed(texts[:5]), a[:5], atol=1e-5)
    assert torch_embedder.embed([]).shape == (0, 384)


def test_same_text_same_vector_across_backends(torch_embedder, int8_embedder, embed_home, texts):
    from behavior_rag.embed.onnx import OnnxEmbedder

    ref = torch_embedder.embed(texts)
    fp32 = OnnxEmbedder(quantized=False, cache_root=embed_home / "models").embed(texts)
    int8 = int8_embedder.embed(texts)
    assert fp32.dtype == int8.dtype == np.float32
    assert (ref * fp32).sum(1).min() > 0.9999  # same network, same pooling
    cos8 = (ref * int8).sum(1)
    assert cos8.mean() > 0.985 and cos8.min() > 0.95  # int8 weights: close, not equal
    # and the int8 vectors rank neighbours like the torch ones do
    sims_ref, sims_8 = ref @ ref.T, int8 @ int8.T
    top_ref = np.argsort(-sims_ref, axis=1)[:, 1:6]
    top_8 = np.argsort(-sims_8, axis=1)[:, 1:6]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top_ref, top_8)])
    assert overlap > 0.6


def test_content_cache_embeds_unchanged_text_once(int8_embedder, tmp_path, texts):
    cached = CachedEmbedder(int8_embedder, tmp_path)
    first = cached.embed(texts)
    assert cached.stats == {"hits": 0, "misses": len(set(texts))}
    again = CachedEmbedder(int8_embedder, tmp_path)  # a new process would see the same file
    second = again.embed(texts[::-1])
    assert again.stats == {"hits": len(texts), "misses": 0}
    np.testing.assert_array_equal(second[::-1], first)


def test_loads_fully_offline(tmp_path):
    code = ("from behavior_rag.embed.sentence_transformers import SentenceTransformerEmbedder;"
            "print(SentenceTransformerEmbedder().embed(['x']).shape)")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "HF_HOME": str(tmp_path / "hf"), "https_proxy": "http://127.0.0.1:9",
                        "http_proxy": "http://127.0.0.1:9"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "(1, 384)" in p.stdout


def test_factory_picks_backend_from_settings(embed_home):
    from behavior_rag.embed import get_embedder
    from behavior_rag.settings import Settings

    emb = get_embedder(Settings(home=embed_home, embed={"backend": "onnx-int8"}))
    assert emb.info.backend == "onnx-int8" and emb.info.dim == 384
    assert emb.info.id == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def openvino_embedder(embed_home):
    pytest.importorskip("openvino", reason="the 'openvino' extra is not installed")
    from behavior_rag.embed.openvino import OpenVinoEmbedder

    return OpenVinoEmbedder(cache_root=embed_home / "models")


def test_openvino_vectors_are_unit_float32_and_agree_with_torch(torch_embedder,
                                                                 openvino_embedder, texts):
    ref = torch_embedder.embed(texts)
    ov = openvino_embedder.embed(texts)
    assert ov.shape == ref.shape and ov.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ov, axis=1), 1.0, atol=1e-5)
    cos = (ref * ov).sum(1)
    assert cos.mean() >= 0.99 and cos.min() > 0.99  # same weights; at most bf16 arithmetic
    info = openvino_embedder.info
    assert (info.backend, info.id, info.dim) == ("openvino", torch_embedder.info.id, 384)
    assert openvino_embedder.embed([]).shape == (0, 384)
    np.testing.assert_allclose(openvino_embedder.embed(texts[:5]), ov[:5], atol=1e-5)


def test_auto_is_the_default_and_records_the_concrete_backend(embed_home):
    from behavior_rag.embed import get_embedder
    from behavior_rag.embed.base import BACKENDS
    from behavior_rag.embed.factory import resolve_backend
    from behavior_rag.settings import Settings

    s = Settings(home=embed_home)
    assert s.embed.backend == "auto"
    emb = get_embedder(s)
    assert emb.info.backend in BACKENDS and emb.info.backend == resolve_backend("auto")
    assert emb.info.id == "sentence-transformers/all-MiniLM-L6-v2"


def test_auto_falls_back_down_the_chain_by_installed_extras():
    from behavior_rag.embed.factory import resolve_backend
    from behavior_rag.errors import ConfigError

    everything = {"openvino", "onnxruntime", "onnx"}

    def auto(installed, cuda=False, bf16=True):
        return resolve_backend("auto", installed=installed, cuda=cuda, bf16=bf16)

    assert auto(everything) == "openvino"  # bf16 CPU: OpenVINO in bf16 is the fastest
    assert auto(everything, bf16=False) == "onnx-int8"  # else int8 beats OpenVINO in f32
    assert auto({"openvino", "onnx"}, bf16=False) == "openvino"
    assert auto({"onnxruntime", "onnx"}) == "onnx-int8"
    assert auto({"openvino"}) == "torch"  # no exporter
    assert auto(set()) == "torch"
    assert auto(everything, cuda=True) == "torch"  # a GPU beats any CPU path
    assert resolve_backend("onnx", installed=set(), cuda=False) == "onnx"  # named: as asked
    with pytest.raises(ConfigError, match="unknown embedding backend"):
        resolve_backend("tensorflow")


def test_missing_openvino_names_the_extra_and_auto_skips_it(monkeypatch, embed_home):
    import sys

    from behavior_rag.embed.factory import resolve_backend
    from behavior_rag.embed.openvino import OpenVinoEmbedder
    from behavior_rag.errors import ConfigError

    # None in sys.modules makes `import openvino` fail as on a box without the package.
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ConfigError, match=r"pip install 'behavior_rag\[openvino\]'") as e:
        OpenVinoEmbedder(cache_root=embed_home / "models")
    assert isinstance(e.value, ImportError) and e.value.context["extra"] == "openvino"
    assert resolve_backend("auto", cuda=False) != "openvino"
