"""``behavior-rag eval``: baselines and the product's methods on one honest split -> report;
``behavior-rag split`` and ``score``: the same split and scores through the user's own
``fit`` and ``classify``.

Example:
    $ behavior-rag eval --task uci-intent --data ../shared/data/uci_online_shoppers/online_shoppers_intention.dev.csv
    $ behavior-rag eval --task taobao-intent --train a.csv --test b.csv --methods gbm,knn,product
    $ behavior-rag eval --task taobao-intent --split time --methods gbm,embed-lr,product
    $ behavior-rag split data/taobao --target purchase --out data/taobao-parts
    $ behavior-rag score preds.json --labels data/taobao-parts/test_labels.csv --positive will_buy
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.errors import ConfigError
from behavior_rag.evaluation.harness import EvalConfig, run_eval
from behavior_rag.evaluation.loaders import TASKS
from behavior_rag.evaluation.methods import DEFAULT_METHODS, METHODS, PRETTY
from behavior_rag.evaluation.score import read_labels, read_predictions, score_predictions
from behavior_rag.evaluation.split_files import write_split
from behavior_rag.evaluation.splits import SPLITS
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
    split: str = typer.Option("user", "--split", help="user: test on held-out users; time: "
                              "train on earlier days, test on later ones (event tasks; the "
                              "report goes to eval/reports/<task>/time and the task's report "
                              "shows both splits)."),
    human: bool = HUMAN,
) -> None:
    """Evaluate every method on the same split; write report.md, result.json and PNG plots."""

    cfg = EvalConfig(task=task, data=data, train=train, test=test,
                     methods=[m.strip() for m in methods.split(",") if m.strip()], out=out,
                     seed=seed, drop=drop, llm_url=llm_url, llm_model=llm_model,
                     llm_limit=llm_limit, cv_folds=cv_folds, synth_n=synth_n,
                     lora_steps=lora_steps, split=_split_name(split))
    res = run_eval(cfg, Settings())
    if human:
        # markup off: the report is Markdown, and "![pr.png](pr.png)" is not a rich style tag
        err.print(Path(res.report).read_text(), markup=False, highlight=False, soft_wrap=True)
    else:
        emit(res.model_dump(mode="json"))


def _split_name(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown --split {split!r}; choose one of {list(SPLITS)}",
                          field="split", value=split)
    return split


def split_cmd(
    source: Path = typer.Argument(..., help="Session store or event log to split."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the train/, dev/ and test/ "
                             "stores, their <part>_labels.csv and split.json."),
    by: str = typer.Option("user", "--by", help="user | time (as `eval --split`)."),
    target: Optional[str] = typer.Option(None, "--target", help="Label and cut by this "
                                         "outcome target before splitting, as `fit --target` "
                                         "and the eval do; the parts keep whole sessions."),
    input_cut: Optional[str] = typer.Option(None, "--input", help="The target's prediction "
                                            "point (default: the target's)."),
    test_frac: float = typer.Option(0.25, "--test-frac", help="Share of users (by time: of "
                                    "sessions, at a day boundary) in the test part."),
    dev_frac: float = typer.Option(0.2, "--dev-frac", help="Share of the rest in dev."),
    seed: int = typer.Option(0, "--seed", help="User shuffle of the test part (dev: seed+1), "
                             "as `eval --seed`."),
    fmt: str = typer.Option("auto", "--format", "-f"),
    human: bool = HUMAN,
) -> None:
    """Split sessions into train / dev / test stores the way `behavior-rag eval` does."""
    if input_cut is not None and target is None:
        raise ConfigError("--input is the prediction point of an outcome target: give "
                          "--target too", field="input", value=input_cut)
    s = Settings()
    rep = write_split(load_sessions(source, fmt, s), out, by=_split_name(by), seed=seed,
                      dev_frac=dev_frac, test_frac=test_frac, target=target, input=input_cut,
                      lock_timeout_s=s.index.lock_timeout_s)
    if human:
        err.print(f"{rep.split.protocol()}: {rep.split.sizes} -> {out}", soft_wrap=True)
    else:
        emit(rep.model_dump(mode="json"))


def score_cmd(
    predictions: Path = typer.Argument(..., help="classify's output: JSON lines, or a "
                                       ".jsonl/.parquet/.csv table (--out)."),
    labels: Path = typer.Option(..., "--labels", help="session_id,label file (CSV/TSV, "
                                "Parquet or JSONL), e.g. split's test_labels.csv."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Two-label targets: the "
                                           "positive label (auROC, auPR, F1 of it)."),
    human: bool = HUMAN,
) -> None:
    """Score predictions against labels (the sessions both name)."""
    sc = score_predictions(read_predictions(predictions), read_labels(labels), positive)
    if human:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sc.metrics.items()
                          if isinstance(v, float))
        err.print(f"{sc.scored} sessions scored ({sc.labels_without_prediction} labelled "
                  f"without a prediction, {sc.predictions_without_label} predictions without "
                  f"a label): {shown}", soft_wrap=True)
    else:
        emit(sc.model_dump(mode="json"))
