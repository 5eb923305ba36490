"""Embed or classify a whole session store in parallel: on a Ray cluster, or in-process.

Pipeline: the store's ids -> ``ray.data.from_arrow`` (a block per shard; read tasks would
compete with the actors for CPUs) -> ``map_batches`` over a pool of ``workers`` actors, each
loading the store and the embedder (resp. ``BehaviorRAG``: fitted index + heads) ONCE in
``__init__`` and writing a shard per block (``out/shards/part-<pos>.parquet``, atomically, in a
temp folder that replaces ``out`` when all is written). Without ``ray_address`` the same
workers run in-process, shard after shard: same output, no Ray needed.

Embed shards: ``session_id``, ``vector`` (fixed-size float32 list: what ``embedder.embed``
gives :func:`~behavior_rag.index.build.upsert_sessions`), ``text_hash``. Hybrid facts are
joined by :func:`index_from_shards` (their scale is fitted on the whole set), which equals
``BehaviorRAG.index_sessions`` + ``save`` on a fresh index. Classify shards: ``session_id``,
``label``, ``confidence``, ``abstained``, ``source``, ``decided_by``, ``llm_asked``,
``prediction`` (the whole PatternPrediction as JSON), equal to ``classify_many``. Vectors of
torch and onnx (fp32) do not depend on which texts share an embedding call; openvino in bf16
and onnx-int8 do (length-sorted batches of 16: up to ~7e-4 / ~2e-2), in-process as well.

``ray_address``: ``auto``, ``host:port``, ``ray://host:10001`` or ``local`` (a throwaway
local Ray); the extra: ``pip install 'behavior-rag[ray]'`` (ray[data]==2.60.0). Every node
needs the same behavior_rag and Ray, and the store, ``out`` and index on a shared filesystem.
GPU nodes: ``num_gpus=1`` (``--gpus 1``) gives each actor a GPU, where ``embed.backend=auto``
picks torch on CUDA; classify's LLM step goes through our vLLM backend by settings
(``BEHAVIOR_RAG_LLM__BACKEND=vllm BEHAVIOR_RAG_LLM__BASE_URL=http://gpu-node:8000/v1``;
``classify.llm`` says when it is asked), each actor sending its own requests.

Example:
    >>> batch_embed("data/store", "out/emb", ray_address="auto", workers=4)  # doctest: +SKIP
    >>> index_from_shards("out/emb", "data/store", "indexes/big")           # doctest: +SKIP
    >>> batch_classify("data/new", "indexes/big", "out/lab", ray_address="auto")  # doctest: +SKIP
"""

from behavior_rag.batch.pipeline import (
    BatchReport,
    RunSpec,
    ShardResult,
    batch_classify,
    batch_embed,
    import_ray,
    settings_json,
    worker_embedder,
)
from behavior_rag.batch.shards import (
    BatchManifest,
    check_labels,
    index_from_shards,
    read_manifest,
    read_shards,
    shard_vectors,
)

__all__ = ["BatchManifest", "BatchReport", "RunSpec", "ShardResult", "batch_classify",
           "batch_embed", "check_labels", "import_ray", "index_from_shards", "read_manifest",
           "read_shards", "settings_json", "shard_vectors", "worker_embedder"]
