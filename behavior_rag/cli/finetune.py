"""``behavior-rag finetune``: a LoRA adapter for the local model from labelled sessions.

Example:
    $ behavior-rag finetune --data data/synth_labelled --taxonomy personas --out adapters/personas
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.cli.common import HUMAN, emit, err, load_sessions, progress
from behavior_rag.evaluation import split_by_user
from behavior_rag.finetune import FinetuneConfig, finetune
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import load_taxonomy


def finetune_cmd(
    data: Path = typer.Option(..., "--data", help="Labelled sessions (store or event log)."),
    out: Path = typer.Option(..., "--out", "-o", help="Adapter folder to write."),
    taxonomy: str = typer.Option("personas", "--taxonomy", "-t"),
    fmt: str = typer.Option("auto", "--format", "-f"),
    model: Optional[str] = typer.Option(None, "--model", help="Base model (default: llm.model)."),
    max_steps: int = typer.Option(125, "--max-steps", help="125 x batch 8 = one pass over "
                                  "the default 1,000 sampled examples."),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: float = typer.Option(5e-4, "--lr"),
    r: int = typer.Option(16, "--r"),
    top_layers: Optional[int] = typer.Option(6, "--top-layers", help="LoRA on the top N "
                                             "layers only (0: all)."),
    k_examples: int = typer.Option(0, "--k-examples", help="Few-shot neighbours in the "
                                   "training prompt (the adapter is used with the same)."),
    prompt: str = typer.Option("classify_compact", "--prompt", help="Training prompt file "
                               "(name under prompts/ or a path); the adapter is used with it. "
                               "classify_compact lists one short line per label; classify "
                               "(descriptions + signals) costs ~1.5x per CPU step on personas."),
    val_frac: float = typer.Option(0.15, "--val-frac", help="Users held out for validation."),
    seed: int = typer.Option(0, "--seed"),
    human: bool = HUMAN,
) -> None:
    """Fine-tune with cross-entropy on the label tokens; early stop on validation macro-F1."""

    s = Settings()
    sessions = [x for x in load_sessions(data, fmt, s) if x.label]
    sp = split_by_user(sessions, seed, dev_frac=val_frac, test_frac=0.0)
    cfg = FinetuneConfig(max_steps=max_steps, batch_size=batch_size, lr=lr, r=r, alpha=2 * r,
                         seed=seed, top_layers=top_layers or None, k_examples=k_examples,
                         prompt=prompt)
    with progress("fine-tuning") as bar:
        task = bar.add_task("steps", total=max_steps)
        res = finetune(sp.train, sp.dev, load_taxonomy(taxonomy), out=out, model=model,
                       config=cfg, settings=s,
                       progress=lambda i, n, loss: bar.update(
                           task, completed=i, description=f"loss {loss:.3f}"))
    if human:
        err.print(f"adapter: {res.adapter}; {res.steps} steps, {res.sec_per_step:.1f} s/step, "
                  f"val macro-F1 {res.card.metrics['val_macro_f1_base']:.3f} -> "
                  f"{res.card.metrics['val_macro_f1_best']:.3f}")
    else:
        emit(res.model_dump(mode="json"))
