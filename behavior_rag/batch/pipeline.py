"""The batch pipeline: shard workers (embed, classify), run in-process or as a Ray Data actor
pool, writing ``out/shards/*.parquet`` and ``out/manifest.json`` atomically (see the package
docstring).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, SecretStr

from behavior_rag.api import BehaviorRAG
from behavior_rag.atomic import replace_dir, replace_file, writing_file
from behavior_rag.batch.shards import BatchManifest, read_shards
from behavior_rag.embed import Embedder, get_embedder
from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.embed.cache import CachedEmbedder
from behavior_rag.embed.factory import resolve_backend
from behavior_rag.errors import BehaviorRagError, ConfigError, StoreError
from behavior_rag.facts import compute_facts
from behavior_rag.index.build import text_hash
from behavior_rag.ingest.store import open_store
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Session

RAY_EXTRA = "pip install 'behavior-rag[ray]'"


class BatchReport(BaseModel):
    """A run: ``seconds`` wall time (actor start-up too), ``worker_s`` summed shard time."""

    kind: Literal["embed", "classify"]
    sessions: int
    shards: int
    seconds: float
    workers: int
    sessions_per_s: float
    worker_s: float
    out: str
    ray: str | None = None  # the cluster address; None: in-process
    embedder: EmbedderInfo | None = None
    index: str | None = None  # classify: the index used; embed: one built from the shards
    labels: dict[str, int] | None = None  # classify: sessions per label




class ShardResult(BaseModel):
    """What one worker call wrote."""

    shard: str
    sessions: int
    seconds: float
    embedder: EmbedderInfo | None = None




def settings_json(settings: Settings) -> str:
    """Settings as JSON with secrets kept (workers rebuild them with ``Settings(**json)``)."""

    def reveal(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: reveal(x) for k, x in v.items()}
        return v.get_secret_value() if isinstance(v, SecretStr) else v

    return json.dumps(reveal(settings.model_dump()), default=str)


def import_ray():
    try:  # ray with Ray Data, or a ConfigError naming the extra

        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"Ray is not installed: {RAY_EXTRA}, or run without a Ray address "
                          "(in-process)", field="ray", extra="ray") from e
    return ray


def worker_embedder(settings: Settings, threads: int | None) -> Embedder:
    """The embedder ``get_embedder(settings)`` makes, on ``threads`` CPU threads (a Ray actor
    gets its CPU share, not every core of the node); ``None``: exactly ``get_embedder``."""
    backend = resolve_backend(settings.embed.backend)
    if threads is None or backend == "torch":  # torch follows OMP_NUM_THREADS (Ray sets it)
        return get_embedder(settings)
    models, model = settings.home / "models", settings.embed.model
    if backend == "openvino":
        from behavior_rag.embed.openvino import OpenVinoEmbedder

        inner: Embedder = OpenVinoEmbedder(model, cache_root=models, threads=threads)
    else:
        from behavior_rag.embed.onnx import OnnxEmbedder

        inner = OnnxEmbedder(model, quantized=backend == "onnx-int8", cache_root=models,
                             threads=threads)
    return CachedEmbedder(inner, settings.home / "embed_cache")


# ---- the workers (Ray actors, or plain objects in-process) ----------------------------------
class ShardWorker:
    """Opens the store once; each call reads one block of ids and writes its shard."""

    embedder: Embedder

    def __init__(self, store: str, shards: str, settings: str) -> None:
        self.settings = Settings(**json.loads(settings))
        self.store = open_store(store)
        self.shards = Path(shards)

    def sessions(self, batch: pa.Table) -> list[Session]:
        ids = batch.column("session_id").to_pylist()
        got = self.store.get_many(ids)
        if len(got) != len(ids):
            lost = sorted(set(ids) - {s.session_id for s in got})[:5]
            raise StoreError(f"{len(ids) - len(got)} sessions left the store during the run "
                             f"(e.g. {lost})", file=str(self.store.path))
        return got

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        name = f"part-{batch.column('pos')[0].as_py():08d}.parquet"
        table = self.shard(self.sessions(batch))
        with writing_file(self.shards / name) as tmp:
            pq.write_table(table, tmp)
        res = ShardResult(shard=name, sessions=table.num_rows,
                          seconds=time.perf_counter() - t0, embedder=self.embedder.info)
        return pa.table({"result": [res.model_dump_json()]})

    def shard(self, sessions: list[Session]) -> pa.Table:
        raise NotImplementedError


class EmbedWorker(ShardWorker):
    """Renders and embeds sessions as :func:`~behavior_rag.index.build.upsert_sessions` does."""

    def __init__(self, store: str, shards: str, settings: str, threads: int | None = None):
        super().__init__(store, shards, settings)
        self.embedder = worker_embedder(self.settings, threads)

    def shard(self, sessions: list[Session]) -> pa.Table:
        texts = [render(s, settings=self.settings, facts=compute_facts(
            s, tz=self.settings.render.timezone)) for s in sessions]
        vecs = np.ascontiguousarray(self.embedder.embed(texts), dtype=np.float32)
        vector = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])
        return pa.table({"session_id": [s.session_id for s in sessions], "vector": vector,
                         "text_hash": [text_hash(t) for t in texts]})


class ClassifyWorker(ShardWorker):
    """Labels sessions with ``BehaviorRAG(settings, index).classify_many`` (loaded once)."""

    def __init__(self, store: str, shards: str, settings: str, index: str) -> None:
        super().__init__(store, shards, settings)
        self.rag = BehaviorRAG(self.settings, index)
        _ = self.rag.classifier  # index, heads and (as classify.llm says) the LLM, now
        self.embedder = self.rag.embedder

    def shard(self, sessions: list[Session]) -> pa.Table:
        preds = self.rag.classify_many(sessions)
        return pa.table({
            "session_id": [p.session_id for p in preds], "label": [p.label for p in preds],
            "confidence": pa.array([p.confidence for p in preds], pa.float64()),
            "abstained": [p.abstained for p in preds], "source": [p.source for p in preds],
            "decided_by": pa.array([p.decided_by for p in preds], pa.list_(pa.string())),
            "llm_asked": [p.llm_asked for p in preds],
            "prediction": [p.model_dump_json() for p in preds]})


# ---- running them ---------------------------------------------------------------------------
def id_blocks(ids: list[str], batch_size: int) -> list[pa.Table]:
    """The store's ids in blocks of ``batch_size`` with each block's start position."""
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1", field="batch_size", value=batch_size)
    return [pa.table({"session_id": ids[i: i + batch_size],
                      "pos": pa.array([i] * len(ids[i: i + batch_size]), pa.int64())})
            for i in range(0, len(ids), batch_size)]


def run_local(worker: type[ShardWorker], args: tuple, blocks: list[pa.Table]) -> list[str]:
    w = worker(*args)
    return [w(b).column("result")[0].as_py() for b in blocks]


def run_ray(worker: type[ShardWorker], args: tuple, blocks: list[pa.Table], *, address: str,
            workers: int, num_cpus: float, num_gpus: float) -> list[str]:
    """Blocks through an actor pool of ``workers`` on the cluster at ``address``."""
    ray = import_ray()
    ours = not ray.is_initialized()
    if ours:
        try:
            ray.init(address=None if address == "local" else address, log_to_driver=False,
                     logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot reach the Ray cluster: {e}", field="ray",
                              value=address) from e
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ds = ray.data.from_arrow(blocks).map_batches(
            worker, fn_constructor_args=args, batch_size=None, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(blocks)))),
            num_cpus=num_cpus, num_gpus=num_gpus)
        return [r["result"] for r in ds.take_all()]
    except Exception as e:  # a worker's own error, unwrapped from Ray's RayTaskError
        cause = getattr(e, "cause", None)
        if isinstance(cause, BehaviorRagError):
            raise cause from None
        raise
    finally:
        if ours:
            ray.shutdown()


def check_out(out: Path, store: Path) -> None:
    """``out`` must be new, empty, or an earlier batch output (it is replaced)."""
    if out.resolve() == store.resolve() or store.resolve() in out.resolve().parents:
        raise ConfigError("the output folder must not be the store or inside it",
                          file=str(out), field="out")
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / "manifest.json").is_file())):
        raise ConfigError("refusing to replace a folder that is not a batch output: give a "
                          "new or empty folder", file=str(out), field="out")


class RunSpec(BaseModel):
    """Where and how wide a batch run goes (see :func:`batch_embed`)."""

    ray_address: str | None = None
    workers: int = 2
    batch_size: int = 256
    num_gpus: float = 0
    cpus_per_worker: float = 1


def run(kind: Literal["embed", "classify"], store: str | Path, out: str | Path,
        settings: Settings, spec: RunSpec, index: str | None = None) -> BatchReport:
    """Shard ``store`` into ``out`` with the ``kind`` worker; the manifest goes in last."""
    store, out = Path(store), Path(out)
    check_out(out, store)
    if spec.ray_address is not None:
        import_ray()  # before any work: a missing extra is said at once
    t0 = time.perf_counter()
    ids = open_store(store).ids()
    blocks = id_blocks(ids, spec.batch_size)
    with replace_dir(out) as tmp:
        (tmp / "shards").mkdir()
        base = (str(store.resolve()), str((tmp / "shards").resolve()), settings_json(settings))
        threads = max(1, int(spec.cpus_per_worker)) if spec.ray_address else None
        worker, args = (EmbedWorker, (*base, threads)) if kind == "embed" else \
            (ClassifyWorker, (*base, str(Path(index or "").resolve())))
        raw = run_local(worker, args, blocks) if spec.ray_address is None else run_ray(
            worker, args, blocks, address=spec.ray_address, workers=spec.workers,
            num_cpus=spec.cpus_per_worker, num_gpus=spec.num_gpus)
        results = sorted((ShardResult.model_validate_json(r) for r in raw), key=lambda r: r.shard)
        info = results[0].embedder if results else None
        manifest = BatchManifest(kind=kind, store=str(store), sessions=len(ids),
                                 shards=[r.shard for r in results], embedder=info, index=index,
                                 created=datetime.now(timezone.utc))
        replace_file(tmp / "manifest.json", manifest.model_dump_json(indent=2))
    secs = time.perf_counter() - t0
    return BatchReport(kind=kind, sessions=len(ids), shards=len(results), seconds=round(secs, 3),
                       workers=1 if spec.ray_address is None else spec.workers,
                       sessions_per_s=round(len(ids) / secs, 2) if secs else 0.0,
                       worker_s=round(sum(r.seconds for r in results), 3), out=str(out),
                       ray=spec.ray_address, embedder=info, index=index)


def batch_embed(store: str | Path, out: str | Path, *, settings: Settings | None = None,
                ray_address: str | None = None, workers: int = 2, batch_size: int = 256,
                num_gpus: float = 0, cpus_per_worker: float = 1) -> BatchReport:
    """Render and embed every session of ``store`` into parquet shards under ``out``.

    ``workers`` actors (Ray only; in-process is one worker) of ``cpus_per_worker`` CPUs (the
    embedder's thread budget) and ``num_gpus`` GPUs each; ``batch_size`` sessions a shard.

    Example:
        >>> batch_embed("data/store", "out/emb", ray_address="auto").shards  # doctest: +SKIP
        782
    """
    return run("embed", store, out, settings or default_settings(), RunSpec(
        ray_address=ray_address, workers=workers, batch_size=batch_size, num_gpus=num_gpus,
        cpus_per_worker=cpus_per_worker))


def batch_classify(store: str | Path, index_path: str | Path, out: str | Path, *,
                   settings: Settings | None = None, ray_address: str | None = None,
                   workers: int = 2, batch_size: int = 256, num_gpus: float = 0,
                   cpus_per_worker: float = 1) -> BatchReport:
    """Label every session of ``store`` with the fitted index at ``index_path`` (as
    ``BehaviorRAG(settings, index_path).classify_many`` does) into parquet shards under ``out``.

    Example:
        >>> batch_classify("data/new", "indexes/synth", "out/lab").labels  # doctest: +SKIP
        {'deal_hunter': 412, ...}
    """
    if not (Path(index_path) / "config.json").is_file():
        raise ConfigError("not an index folder (no config.json): fit one first",
                          file=str(index_path), field="index")
    report = run("classify", store, out, settings or default_settings(), RunSpec(
        ray_address=ray_address, workers=workers, batch_size=batch_size, num_gpus=num_gpus,
        cpus_per_worker=cpus_per_worker), index=str(index_path))
    labels = read_shards(out)["label"].value_counts(sort=True)
    return report.model_copy(update={"labels": dict(labels.iter_rows())})
