"""Tune the sentence embedder on the user's own sessions with sentence-transformers' trainer.

Labelled sessions give contrastive pairs of same-label sessions of different users; unlabelled
ones give two views of one session and consecutive sessions of one user (:mod:`.pairs`). The
loss is MultipleNegativesRankingLoss over batches built so that no in-batch negative is a false
one. The result is a sentence-transformers folder plus ``behavior_rag_tuned.json``; its id,
``tuned:<content hash>``, is what an index records (:mod:`.tuned`), and it loads through every
backend like any local model folder (``embed.model=<folder>``).

Example:
    >>> from behavior_rag.synth import generate
    >>> r = tune_embedder(generate(200, seed=3).sessions, "models/tuned",
    ...                   config=TuneConfig(max_steps=20))                  # doctest: +SKIP
    >>> r.model_id                                                          # doctest: +SKIP
    'tuned:3f9c0a...'
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from behavior_rag.atomic import replace_dir, replace_file
from behavior_rag.embed.pairs import PairBatches, build_pairs
from behavior_rag.embed.sentence_transformers import model_id
from behavior_rag.embed.tuned import MANIFEST, TunedManifest, content_hash
from behavior_rag.errors import ConfigError
from behavior_rag.resources import embedding_model_dir
from behavior_rag.settings import Settings
from behavior_rag.types import Session


class TuneConfig(BaseModel):
    """How to tune. The defaults keep 1,000 sessions within ~15 min on 2 CPU cores."""

    mode: Literal["auto", "labelled", "self-supervised"] = Field(
        "auto", description="auto: labelled when at least two labels are present.")
    max_steps: int = Field(60, ge=1, description="Optimizer steps at most (bounds CPU cost).")
    epochs: int = Field(1, ge=1, description="Passes over the batches (until max_steps).")
    batch_size: int = Field(16, ge=2, description="Pairs per batch; labelled batches hold at "
                            "most one pair per label, so they are capped at the label count.")
    lr: float = Field(5e-5, gt=0)
    warmup_steps: int = Field(5, ge=0)
    max_pairs_per_label: int = Field(64, ge=1, description="Labelled pairs per label (few-shot: "
                                     "8-64 sessions per label give enough pairs).")
    max_pairs: int = Field(2000, ge=2, description="Self-supervised pairs at most.")
    max_seq_length: int = Field(128, ge=16, le=512, description="Tokens per text in training "
                                "(the facts line and first events; 256 doubles the step cost).")
    crop: float = Field(0.6, gt=0, le=1, description="A view keeps a contiguous window of at "
                        "least this share of the events.")
    drop: float = Field(0.15, ge=0, lt=1, description="Each event of a view dropped with this "
                        "probability.")
    seed: int = 0


class TuneReport(BaseModel):
    """What a tuning run did and cost."""

    path: str
    model_id: str
    base_id: str
    mode: str
    sessions: int
    pairs: int
    batches: int
    steps: int
    seconds: float
    s_per_step: float
    peak_rss_mb: float = Field(description="The process's peak resident memory (ru_maxrss).")
    loss: float | None = None
    per_label: dict[str, int] = Field(default_factory=dict)


def tune_embedder(sessions: Sequence[Session], out: str | Path, *,
                  base: str = "all-MiniLM-L6-v2", config: TuneConfig | None = None,
                  settings: Settings | None = None) -> TuneReport:
    """Tune ``base`` on ``sessions`` and save the model folder at ``out`` atomically."""
    cfg = config or TuneConfig()
    labelled = _labelled(sessions, cfg.mode)
    pb = build_pairs(sessions, labelled=labelled, batch_size=cfg.batch_size,
                     max_pairs_per_label=cfg.max_pairs_per_label, max_pairs=cfg.max_pairs,
                     crop=cfg.crop, drop=cfg.drop, seed=cfg.seed, settings=settings)
    t0 = time.perf_counter()
    model, steps, loss = train_model(pb, base=base, config=cfg)
    seconds = time.perf_counter() - t0
    manifest = save_tuned(model, out, TunedManifest(
        base=base, base_id=model_id(base), mode=pb.mode, pairs=len(pb.anchors), steps=steps,
        config=cfg.model_dump(), content_hash=""))
    return TuneReport(
        path=str(out), model_id=f"tuned:{manifest.content_hash[:16]}", base_id=manifest.base_id,
        mode=pb.mode, sessions=len(sessions), pairs=len(pb.anchors), batches=len(pb.batches),
        steps=steps, seconds=round(seconds, 2), s_per_step=round(seconds / max(steps, 1), 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        loss=loss, per_label=pb.per_label)


def _labelled(sessions: Sequence[Session], mode: str) -> bool:
    labels = {s.label for s in sessions if s.label is not None}
    if mode == "labelled" and len(labels) < 2:
        raise ConfigError("mode=labelled needs sessions of at least two labels",
                          field="mode", value=sorted(labels))
    return mode == "labelled" or (mode == "auto" and len(labels) >= 2)


def train_model(pb: PairBatches, *, base: str = "all-MiniLM-L6-v2",
                config: TuneConfig | None = None):
    """Run sentence-transformers' trainer over the prepared batches, in their order.

    Returns ``(SentenceTransformer, steps, last logged loss)``; the model is in memory only.
    """
    cfg = config or TuneConfig()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
            losses,
        )
    except ImportError as e:
        raise ConfigError("tuning the embedder needs datasets and accelerate: "
                          "pip install 'behavior_rag[tune]'") from e
    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(str(embedding_model_dir(base)), device="cpu",
                                local_files_only=True)
    serve_len = model.max_seq_length
    model.max_seq_length = cfg.max_seq_length
    steps = min(cfg.max_steps, len(pb.batches) * cfg.epochs)
    data = Dataset.from_dict({"anchor": pb.anchors, "positive": pb.positives})
    with tempfile.TemporaryDirectory(prefix="br-tune-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr, warmup_steps=min(cfg.warmup_steps, steps // 2),
            seed=cfg.seed, data_seed=cfg.seed, save_strategy="no", report_to="none",
            logging_steps=max(1, steps // 10), disable_tqdm=True, use_cpu=True,
            dataloader_num_workers=0, batch_sampler=_fixed_batches(pb.batches))
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=data,
            loss=losses.MultipleNegativesRankingLoss(model))
        # The trainer prints its logs on stdout, which is our CLI's JSON channel.
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # Shorter texts only make training cheap; the model embeds as its base did (same token
    # budget, so an index's max_tokens and renderings do not change with tuning).
    model.max_seq_length = serve_len
    model.eval()
    return model, steps, (round(float(logged[-1]), 4) if logged else None)


def _fixed_batches(batches: list[list[int]]):
    """A ``batch_sampler`` factory for the trainer that yields our batches in our order (the
    default shuffles rows, which would put same-label pairs together)."""
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class FixedBatches(DefaultBatchSampler):
        def __iter__(self):
            yield from (list(b) for b in batches)

        def __len__(self) -> int:
            return len(batches)

    def make(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return FixedBatches(dataset, batch_size=batch_size, drop_last=drop_last,
                            valid_label_columns=valid_label_columns, generator=generator,
                            seed=seed)

    return make


def save_tuned(model, out: str | Path, manifest: TunedManifest) -> TunedManifest:
    """Save ``model`` with its manifest as the folder ``out``, atomically (a temp folder beside
    it, renamed into place); the manifest gets the folder's content hash."""
    with replace_dir(out) as tmp:
        model.save(str(tmp))
        manifest = manifest.model_copy(update={"content_hash": content_hash(tmp)})
        replace_file(tmp / MANIFEST, manifest.model_dump_json(indent=2))
    return manifest
