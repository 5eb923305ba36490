"""Pick the embedder from :class:`Settings` (``embed.backend``), wrapped in the content cache.

``"auto"`` (the default) resolves, when the embedder is loaded, to torch on a CUDA GPU, else
to the first backend of :data:`AUTO_ORDER` (or :data:`AUTO_ORDER_NO_BF16` on a CPU without
native bf16) whose packages are installed: the fastest that keeps mean cosine >= 0.99 to
torch fp32 in ``eval/bench_embed.py`` comes first, torch (a core dependency) last. The concrete
name is what ``embedder.info.backend`` and an index's config record.

Backends come from the registry :data:`EMBEDDERS`: the built-in ones, and those a package
declares as a factory ``make(model, cache_root) -> Embedder`` under the
``behavior_rag.embedders`` entry point group, so ``--backend NAME`` reaches them.

Example:
    >>> resolve_backend("auto", installed={"openvino", "onnx"}, cuda=False, bf16=True)
    'openvino'
    >>> resolve_backend("auto", installed=set(), cuda=False)
    'torch'
    >>> emb = get_embedder(Settings(embed={"backend": "onnx-int8"}))   # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from functools import lru_cache
from pathlib import Path

from behavior_rag.embed.base import BACKENDS, Embedder
from behavior_rag.embed.cache import CachedEmbedder
from behavior_rag.errors import ConfigError
from behavior_rag.plugins import Registry
from behavior_rag.settings import Settings, default_settings

# Fastest first, each at mean cosine >= 0.99 to torch fp32 on 2,000 real Taobao renderings
# (eval/reports/bench_embed.md): openvino 0.99998, onnx-int8 0.992. onnx (fp32 on ONNX Runtime)
# is never picked: where onnxruntime is installed, its int8 variant is faster at cosine >= 0.99.
# openvino leads where the CPU has native bf16 (OpenVINO then computes in bf16); forced to f32
# (what it does on other CPUs) it measured slower than onnx-int8, so there int8 leads.
AUTO_ORDER: tuple[str, ...] = ("openvino", "onnx-int8", "torch")
AUTO_ORDER_NO_BF16: tuple[str, ...] = ("onnx-int8", "openvino", "torch")
# The importable packages each backend needs beyond the core install (pip extra in brackets):
# the exported backends also need `onnx` for our torch -> ONNX export.
REQUIRES: dict[str, tuple[str, ...]] = {
    "openvino": ("openvino", "onnx"),      # [openvino]
    "onnx-int8": ("onnxruntime", "onnx"),  # [onnx]
    "onnx": ("onnxruntime", "onnx"),       # [onnx]
    "torch": (),                           # core
}


EMBEDDERS = Registry("behavior_rag.embedders", {
    b: f"behavior_rag.embed.factory:{b.replace('-', '_')}_embedder" for b in BACKENDS},
    what="embedding backend", field="embed.backend")


def torch_embedder(model: str, cache_root: Path) -> Embedder:
    from behavior_rag.embed.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model)


def openvino_embedder(model: str, cache_root: Path) -> Embedder:
    from behavior_rag.embed.openvino import OpenVinoEmbedder

    return OpenVinoEmbedder(model, cache_root=cache_root)


def onnx_embedder(model: str, cache_root: Path) -> Embedder:
    from behavior_rag.embed.onnx import OnnxEmbedder

    return OnnxEmbedder(model, quantized=False, cache_root=cache_root)


def onnx_int8_embedder(model: str, cache_root: Path) -> Embedder:
    from behavior_rag.embed.onnx import OnnxEmbedder

    return OnnxEmbedder(model, quantized=True, cache_root=cache_root)


def installed_packages() -> set[str]:
    """Which of the optional packages the backends need are importable here."""
    wanted = {m for mods in REQUIRES.values() for m in mods}
    return {m for m in wanted if importlib.util.find_spec(m) is not None}


def cuda_available() -> bool:
    """A CUDA GPU torch can use (torch is imported only where an NVIDIA device node exists)."""
    if not Path("/dev/nvidia0").exists():
        return False
    import torch

    return bool(torch.cuda.is_available())


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (avx512_bf16 or AMX), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_backend(backend: str, installed: Collection[str] | None = None,
                    cuda: bool | None = None, bf16: bool | None = None) -> str:
    """The concrete backend for a setting: ``auto`` -> torch on a CUDA GPU (the GPU beats any
    CPU path), else the first of AUTO_ORDER (AUTO_ORDER_NO_BF16 on CPUs without native bf16)
    whose packages are installed.

    A named backend is returned as is; if its extra is missing, loading it says which.
    """
    if backend != "auto":
        if backend not in BACKENDS and backend not in EMBEDDERS.names():
            raise ConfigError(f"unknown embedding backend {backend!r}: use auto or one of "
                              f"{', '.join(EMBEDDERS.names())}", field="backend", value=backend)
        return backend
    if cuda_available() if cuda is None else cuda:
        return "torch"
    have = installed_packages() if installed is None else set(installed)
    order = AUTO_ORDER if (cpu_has_bf16() if bf16 is None else bf16) else AUTO_ORDER_NO_BF16
    return next(b for b in order if set(REQUIRES[b]) <= have)


def get_embedder(settings: Settings | None = None, *, cache: bool = True) -> Embedder:
    """The configured embedder (loaded once per process and configuration)."""
    s = settings or default_settings()
    backend = resolve_backend(s.embed.backend)
    if not cache:
        return _load(s.embed.model, backend, str(s.home))
    return _cached(s.embed.model, backend, str(s.home))


@lru_cache(maxsize=4)
def _load(model: str, backend: str, home: str) -> Embedder:
    emb = EMBEDDERS.get(backend)(model, Path(home) / "models")
    if not isinstance(emb, Embedder):
        raise ConfigError(f"embedding backend {backend!r} made a {type(emb).__name__}, not an "
                          "Embedder", field="embed.backend", value=backend)
    return emb


@lru_cache(maxsize=4)
def _cached(model: str, backend: str, home: str) -> Embedder:
    return CachedEmbedder(_load(model, backend, home), Path(home) / "embed_cache")
