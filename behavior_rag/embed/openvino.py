"""OpenVINO backend: our fp32 ONNX export (embed/onnx.py) compiled by OpenVINO for the CPU.

Same network and weights as torch, run by OpenVINO's fused CPU kernels in bf16 where the CPU
has it natively (else f32), so vectors match torch's (mean cosine 0.99998 on real Taobao
renderings) at several times its speed (eval/reports/bench_embed.md). The export is made once
and cached under ``Settings.home/models``; OpenVINO reads the .onnx directly (about a second).

Example:
    >>> emb = OpenVinoEmbedder()                               # doctest: +SKIP
    >>> emb.info.backend, emb.embed(["facts: 3 events"]).shape # doctest: +SKIP
    ('openvino', (1, 384))
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from behavior_rag.embed.base import EmbedderInfo, MissingBackendError, Progress
from behavior_rag.embed.onnx import export_onnx
from behavior_rag.embed.pooling import TokenPooler
from behavior_rag.embed.sentence_transformers import model_id
from behavior_rag.resources import embedding_model_dir
from behavior_rag.settings import default_settings

EXTRA = "openvino"


def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise MissingBackendError("the openvino embedding backend needs OpenVINO: "
                                  f"pip install 'behavior_rag[{EXTRA}]'", extra=EXTRA) from e
    return openvino


def compile_config(threads: int | None = None, precision: str | None = None) -> dict[str, str]:
    """OpenVINO CPU settings: our thread budget and the latency hint.

    Arithmetic precision is OpenVINO's per-CPU default on purpose: bf16 where the CPU has it
    natively (avx512_bf16 / AMX), else f32. bf16 measured 1.6x faster than f32 on an
    avx512_bf16 EPYC at mean cosine 0.99998 to torch fp32 (min 0.99997), so vectors built on
    two kinds of box agree far above the 0.99 bar (eval/reports/bench_embed.md).

    ``precision`` ("f32", "bf16") overrides it; the benchmark uses that to show f32's speed.

    Example:
        >>> compile_config(2)["INFERENCE_NUM_THREADS"]
        '2'
    """
    cfg = {
        # One request at a time on all our threads: the latency hint does not split the cores
        # into parallel streams that a single caller could never fill.
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": str(threads or os.cpu_count() or 1),
        # OpenVINO pins its threads to the first cores: two one-thread embedders (Ray actors,
        # two service replicas) then share core 0. Measured on 2 cores, 1 thread each: 37 texts/s
        # per process side by side with pinning (75 alone), 77 without.
        "ENABLE_CPU_PINNING": "NO",
    }
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    return cfg


class OpenVinoEmbedder:
    """openvino backend (CPU). Thread-safe: one infer request, used under a lock."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, cache_root: str | Path | None = None,
                 threads: int | None = None, precision: str | None = None) -> None:
        ov = _openvino()
        cache_root = Path(cache_root) if cache_root else default_settings().home / "models"
        path = export_onnx(model, cache_root, quantized=False)
        self._pool = TokenPooler(embedding_model_dir(model))
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_config(threads, precision))
        self._request = compiled.create_infer_request()
        # what OpenVINO chose for this CPU ("bf16" or "f32"), shown by eval/bench_embed.py
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._lock = threading.Lock()  # an infer request serves one call at a time
        dim = compiled.outputs[0].get_partial_shape()[-1]
        self.info = EmbedderInfo(id=model_id(model),
                                 dim=int(dim.get_length()) if dim.is_static else 384,
                                 backend="openvino", max_tokens=self._pool.max_len)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            # copy: the request reuses its output buffer on the next call
            return np.array(self._request.infer(feeds)[0], copy=True)

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None,
              progress: Progress | None = None) -> np.ndarray:
        # 16, length-sorted: as for ONNX Runtime, small batches waste least on padding.
        return self._pool.embed(self._run, texts, self.info.dim, batch_size=batch_size or 16,
                                progress=progress)
