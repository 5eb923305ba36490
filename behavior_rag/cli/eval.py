"""``behavior-rag eval``: baselines and the product's methods on one honest split -> report.

Example:
    $ behavior-rag eval --task uci-intent --data ../shared/data/uci_online_shoppers/online_shoppers_intention.dev.csv
    $ behavior-rag eval --task taobao-intent --train a.csv --test b.csv --methods gbm,knn,product
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.cli.common import HUMAN, emit, err
from behavior_rag.evaluation.harness import EvalConfig, run_eval
from behavior_rag.evaluation.loaders import TASKS
from behavior_rag.evaluation.methods import DEFAULT_METHODS, METHODS, PRETTY
from behavior_rag.settings import Settings

# Built from the method registry, so the help cannot name a method that no longer exists.
METHODS_HELP = ("Comma-separated, from: " + "; ".join(f"{m} = {PRETTY[m]}" for m in METHODS)
                + ". lora fine-tunes a LoRA adapter on the training part first (not in the "
                "default).")


def eval_cmd(
    task: str = typer.Option(..., "--task", "-t", help=" | ".join(TASKS)),
    data: Optional[Path] = typer.Option(None, "--data", help="One file in the task's original "
                                        "format, split internally (default: the dev file)."),
    train: Optional[Path] = typer.Option(None, "--train", help="Fit on this file ..."),
    test: Optional[Path] = typer.Option(None, "--test", help="... report on this one."),
    methods: str = typer.Option(",".join(DEFAULT_METHODS), "--methods", help=METHODS_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder "
                                       "(default eval/reports/<task>)."),
    seed: int = typer.Option(0, "--seed"),
    drop: list[str] = typer.Option([], "--drop", help="Drop a column (uci: PageValues)."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url", help="vLLM server (OpenAI API) "
                                          "instead of the embedded model."),
    llm_model: Optional[str] = typer.Option(None, "--llm-model"),
    llm_limit: int = typer.Option(200, "--llm-limit", help="Validation/test sessions sampled "
                                  "for the LLM-based methods (CPU cost)."),
    cv_folds: int = typer.Option(5, "--cv-folds", help="uci-intent: k-fold CV (0 = off)."),
    synth_n: int = typer.Option(1500, "--synth-n", help="synth-personas without --data."),
    lora_steps: int = typer.Option(125, "--lora-steps"),
    human: bool = HUMAN,
) -> None:
    """Evaluate every method on the same split; write report.md, result.json and PNG plots."""

    cfg = EvalConfig(task=task, data=data, train=train, test=test,
                     methods=[m.strip() for m in methods.split(",") if m.strip()], out=out,
                     seed=seed, drop=drop, llm_url=llm_url, llm_model=llm_model,
                     llm_limit=llm_limit, cv_folds=cv_folds, synth_n=synth_n,
                     lora_steps=lora_steps)
    res = run_eval(cfg, Settings())
    if human:
        # markup off: the report is Markdown, and "![pr.png](pr.png)" is not a rich style tag
        err.print(Path(res.report).read_text(), markup=False, highlight=False, soft_wrap=True)
    else:
        emit(res.model_dump(mode="json"))
