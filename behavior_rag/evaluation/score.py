"""``behavior-rag score``: how good are ``classify``'s predictions against a label file.

Predictions: what ``classify`` writes (JSON lines of PatternPrediction on stdout or ``--out
x.json``; or a ``--out`` table: ``.jsonl``, ``.parquet``, ``.csv``). Labels: a file with
``session_id`` and ``label`` columns (CSV/TSV, Parquet or JSONL), e.g. the ``test_labels.csv``
of ``behavior-rag split``. Only sessions in both are scored; the others are counted. With
``positive`` (two-label targets) the scores are those of the eval's rows: auROC and auPR from
the positive label's probability, F1 and accuracy from the label ``classify`` gave (it applies
the threshold ``fit`` chose), calibration error and 95 % bootstrap intervals.

Example:
    >>> from behavior_rag.types import PatternPrediction
    >>> ps = [PatternPrediction(session_id=i, label=l, probabilities={"b": p, "n": 1 - p},
    ...                         confidence=0.5, abstained=False, explanation="", evidence=[])
    ...       for i, l, p in (("1", "b", 0.9), ("2", "n", 0.2), ("3", "b", 0.7))]
    >>> s = score_predictions(ps, {"1": "b", "2": "n", "3": "n", "4": "b"}, positive="b")
    >>> s.scored, s.labels_without_prediction, s.metrics["auroc"]
    (3, 1, 1.0)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, Field, ValidationError
from sklearn.metrics import accuracy_score, f1_score

from behavior_rag import frames
from behavior_rag.errors import ConfigError, DataError
from behavior_rag.evaluation.metrics import (
    binary_metrics,
    bootstrap_intervals,
    multiclass_metrics,
)
from behavior_rag.types import PatternPrediction


class Score(BaseModel):
    """Scores of predictions against labels, and how many rows each side could not match."""

    predictions: int
    labels: int
    scored: int
    labels_without_prediction: int = Field(description="Labelled sessions nobody predicted.")
    predictions_without_label: int = Field(description="Predicted sessions with no label.")
    positive: str | None = None
    abstained: int = 0
    metrics: dict[str, float | int | None] = Field(default_factory=dict)


def read_predictions(path: str | Path) -> list[PatternPrediction]:
    """``classify`` output: JSON lines of PatternPrediction, or a jsonl/parquet/csv table."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("predictions file not found", file=str(path), field="predictions")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv") or (suffix in (".jsonl", ".ndjson")
                                          and not _plain_json(path)):
        return frames.from_polars(frames.read_frame(path, "prediction"), kind="prediction")
    out = []
    with path.open(encoding="utf-8") as f:
        for row, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(PatternPrediction.model_validate_json(line))
            except ValidationError as e:
                raise DataError(f"not a prediction: {e.errors()[0]['msg']}", file=str(path),
                                row=row, field=".".join(map(str, e.errors()[0]["loc"]))) from e
    return out


def _plain_json(path: Path) -> bool:
    """Whether a .jsonl file holds classify's JSON documents (probabilities as an object)."""
    with path.open(encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        return isinstance(json.loads(first).get("probabilities"), dict) if first else True
    except (ValueError, AttributeError):
        return False


def read_labels(path: str | Path) -> dict[str, str]:
    """``session_id -> label`` from a CSV/TSV, Parquet or JSONL label file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("label file not found", file=str(path), field="labels")
    try:
        if path.suffix.lower() == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            frame = pl.read_ndjson(path)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pl.read_csv(path, separator=sep, infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise DataError(f"cannot read the label file: {e}", file=str(path)) from e
    missing = [c for c in ("session_id", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"the label file needs columns session_id and label; missing "
                        f"{missing}", file=str(path), field=missing[0], columns=frame.columns)
    return {str(k): str(v) for k, v in zip(frame["session_id"], frame["label"])
            if k is not None and v is not None}


def score_predictions(preds: Sequence[PatternPrediction], labels: Mapping[str, str],
                      positive: str | None = None) -> Score:
    """Score the predictions of labelled sessions (see the module docstring)."""
    got = [p for p in preds if p.session_id in labels]
    ids = {p.session_id for p in preds}
    score = Score(predictions=len(preds), labels=len(labels), scored=len(got),
                  labels_without_prediction=sum(1 for k in labels if k not in ids),
                  predictions_without_label=len(preds) - len(got), positive=positive,
                  abstained=sum(p.abstained for p in got))
    if not got:
        raise DataError("no prediction names a labelled session: are these the predictions "
                        "of the labelled sessions?", field="session_id",
                        examples=[p.session_id for p in preds[:3]])
    y = [labels[p.session_id] for p in got]
    if positive is not None:
        proba = np.array([p.probabilities.get(positive, 0.0) for p in got])
        said = np.array([p.label == positive for p in got]).astype(int)
        truth = (np.array(y, dtype=object) == positive).astype(int)
        abstained = np.array([p.abstained for p in got])
        score.metrics = {k: v for k, v in binary_metrics(
            y, proba, positive, abstained=abstained).items() if k != "threshold"} | {
            "accuracy": float(accuracy_score(truth, said)),
            "macro_f1": float(f1_score(truth, said, average="macro", zero_division=0)),
            "f1_pos": float(f1_score(truth, said, zero_division=0)),
        } | bootstrap_intervals(y, proba, positive)
        return score
    classes = sorted(set(y) | {c for p in got for c in p.probabilities})
    proba = np.array([[p.probabilities.get(c, 0.0) for c in classes] for p in got])
    score.metrics = multiclass_metrics(y, proba, classes,
                                       abstained=np.array([p.abstained for p in got]))
    return score
