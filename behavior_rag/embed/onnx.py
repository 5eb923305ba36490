"""ONNX Runtime backend: the same model exported once to ONNX (fp32), optionally int8-quantised.

The export (torch -> ONNX, then ``onnxruntime.quantization.quantize_dynamic``) runs once and is
cached under ``Settings.home/models``; later loads take a second. Tokenisation uses the model's
own ``tokenizer.json``; pooling (attention-masked mean) and normalisation match
sentence-transformers, so vectors agree with the torch backend (cosine ~0.99+ for int8).

Example:
    >>> emb = OnnxEmbedder(quantized=True)                   # doctest: +SKIP
    >>> emb.embed(["facts: 3 events"]).shape                 # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from behavior_rag.atomic import exclusive, writing_file
from behavior_rag.embed.base import EmbedderInfo, MissingBackendError, Progress
from behavior_rag.embed.pooling import TokenPooler
from behavior_rag.embed.sentence_transformers import model_id
from behavior_rag.resources import embedding_model_dir
from behavior_rag.settings import default_settings

EXPORT_VERSION = 2


def _require(extra: str = "onnx"):
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise MissingBackendError("the ONNX embedding backend needs onnxruntime and onnx: "
                                  f"pip install 'behavior_rag[{extra}]'", extra=extra) from e

def export_onnx(model: str, cache_root: Path, quantized: bool) -> Path:
    """Export (and quantise) once into ``cache_root``; returns the .onnx path."""
    src = embedding_model_dir(model)
    key = model_id(model).replace("/", "_").replace(":", "_")
    folder = cache_root / f"{key}-onnx-v{EXPORT_VERSION}"
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    target = int8 if quantized else fp32
    if target.exists():
        return target
    # Ray workers on a fresh home all start here at once: one exports, the others wait for it.
    with exclusive(cache_root / f".{key}-onnx.lock"):
        if not fp32.exists():
            _export_fp32(src, fp32)
        if quantized and not int8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Per-channel weight scales: per-tensor int8 loses much more cosine similarity on
            # session texts (eval/reports/bench_embed.md).
            with writing_file(int8) as tmp:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                                 per_channel=True)
    return target

def _export_fp32(src: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Eager attention exports as plain MatMul/Softmax ops that ONNX Runtime fuses and quantises
    # well; the SDPA path traces into shape-dependent control flow.
    model = AutoModel.from_pretrained(str(src), local_files_only=True,
                                      attn_implementation="eager").eval()

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    with writing_file(dest) as tmp:
        # The TorchScript exporter gives a single self-contained file with dynamic axes and no
        # extra dependency (the dynamo exporter needs onnxscript).
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about constant-folded shapes
            torch.onnx.export(Wrapped(model), (ids, ids, torch.zeros_like(ids)), str(tmp),
                              input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["last_hidden_state"], opset_version=17,
                              dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                                            ("input_ids", "attention_mask", "token_type_ids",
                                             "last_hidden_state")})

class OnnxEmbedder:
    """onnx / onnx-int8 backend on ONNX Runtime (CPU)."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, quantized: bool = True,
                 cache_root: str | Path | None = None, threads: int | None = None) -> None:
        _require()
        import onnxruntime as ort

        cache_root = Path(cache_root) if cache_root else default_settings().home / "models"
        path = export_onnx(model, cache_root, quantized)
        self._pool = TokenPooler(embedding_model_dir(model))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        out = self._sess.get_outputs()[0].shape
        dim = out[-1] if isinstance(out[-1], int) else 384
        self.info = EmbedderInfo(id=model_id(model), dim=int(dim),
                                 backend="onnx-int8" if quantized else "onnx",
                                 max_tokens=self._pool.max_len)

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None,
              progress: Progress | None = None) -> np.ndarray:
        # Small length-sorted batches measured fastest on 2 cores (less padding, cache-friendly).
        return self._pool.embed(lambda feeds: self._sess.run(None, feeds)[0], texts,
                                self.info.dim, batch_size=batch_size or 16, progress=progress)
