"""``behavior-rag batch embed|classify``: a whole session store in parallel on a Ray cluster
(``--ray ADDRESS``), or in-process without one. Shards and a manifest go under ``--out``; one
JSON report on stdout (see :mod:`behavior_rag.batch`).

Example:
    $ behavior-rag batch embed data/store --out out/emb --ray auto --workers 8 --index indexes/big
    $ behavior-rag batch classify data/new --index indexes/big --out out/labels --ray auto
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.batch import BatchReport, batch_classify, batch_embed, index_from_shards
from behavior_rag.cli.common import HUMAN, emit, err
from behavior_rag.settings import Settings

batch_app = typer.Typer(no_args_is_help=True, help="Embed or classify a whole session store "
                        "in parallel (Ray Data actors; in-process without --ray).")
STORE = typer.Argument(..., help="Session store folder.")
OUT = typer.Option(..., "--out", "-o", help="Output folder for the shards (new, empty, or an "
                   "earlier batch output, which is replaced).")
RAY = typer.Option(None, "--ray", help="Ray cluster address: auto, HOST:PORT, ray://HOST:10001 "
                   "or local (a throwaway local Ray). Unset: in-process, Ray not needed.")
WORKERS = typer.Option(2, "--workers", "-w", min=1, help="Ray actors (one CPU each).")
BATCH = typer.Option(256, "--batch-size", min=1, help="Sessions per shard.")
GPUS = typer.Option(0.0, "--gpus", min=0.0, help="GPUs per actor (e.g. 1 on GPU nodes).")


def _show(report: BatchReport, human: bool, **extra) -> None:
    if human:
        where = f"Ray at {report.ray}, {report.workers} workers" if report.ray else "in-process"
        err.print(f"{report.kind}: {report.sessions} sessions in {report.shards} shards, "
                  f"{report.seconds:.1f} s ({report.sessions_per_s:.1f}/s, {where}) -> "
                  f"{report.out}" + (f"; index {extra['index']['path']}" if extra else ""))
    else:
        emit(report.model_dump(mode="json") | extra)


@batch_app.command("embed")
def embed(store: Path = STORE, out: Path = OUT, ray: Optional[str] = RAY,
          workers: int = WORKERS, batch_size: int = BATCH, gpus: float = GPUS,
          index: Optional[Path] = typer.Option(None, "--index", "-i", help="Also build this "
                                               "index from the shards (no re-embedding)."),
          human: bool = HUMAN) -> None:
    """Render and embed every session into parquet shards (session_id, vector, text_hash)."""
    s = Settings()
    report = batch_embed(store, out, settings=s, ray_address=ray, workers=workers,
                         batch_size=batch_size, num_gpus=gpus)
    extra = {}
    if index is not None:
        cfg = index_from_shards(out, store, index, s)
        extra = {"index": {"path": str(index), "count": cfg.count, "kind": cfg.kind}}
    _show(report, human, **extra)


@batch_app.command("classify")
def classify(store: Path = STORE,
             index: Path = typer.Option(..., "--index", "-i", help="Fitted index folder."),
             out: Path = OUT, ray: Optional[str] = RAY, workers: int = WORKERS,
             batch_size: int = BATCH, gpus: float = GPUS, human: bool = HUMAN) -> None:
    """Label every session (the LLM asked as classify.llm says) into parquet shards."""
    report = batch_classify(store, index, out, settings=Settings(), ray_address=ray,
                            workers=workers, batch_size=batch_size, num_gpus=gpus)
    _show(report, human)
