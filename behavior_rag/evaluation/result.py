"""What ``behavior-rag eval`` takes (:class:`EvalConfig`) and returns (:class:`EvalResult`).

Example:
    >>> EvalConfig(task="synth-personas").methods[:2]
    ['majority', 'bow']
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from behavior_rag.evaluation.faithfulness import Faithfulness
from behavior_rag.evaluation.methods import DEFAULT_METHODS
from behavior_rag.evaluation.splits import SplitInfo
from behavior_rag.finetune.config import FinetuneResult
from behavior_rag.heads.stack import StackSummary


class EvalConfig(BaseModel):
    task: str
    data: Path | None = None
    train: Path | None = None
    test: Path | None = None
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    lora_steps: int = 125
    out: Path | None = None
    seed: int = 0
    drop: list[str] = Field(default_factory=list)
    llm_url: str | None = None
    llm_model: str | None = None
    llm_limit: int = 200
    cv_folds: int = 5
    synth_n: int = 1500
    split: Literal["user", "time"] = Field("user", description="Event tasks: test on held-out "
                                           "users, or on later days (train on earlier ones).")


class MethodResult(BaseModel):
    method: str
    metrics: dict[str, float | int | None]
    seconds_per_session: float | None = None
    threshold: float | None = None


class EvalResult(BaseModel):
    task: str
    config: EvalConfig
    protocol: str
    sources: list[str]
    sizes: dict[str, int]
    classes: list[str]
    positive: str | None
    results: list[MethodResult]
    llm_sample: list[MethodResult] = Field(default_factory=list)
    llm_sample_size: int = 0
    cv: dict[str, dict[str, float]] = Field(default_factory=dict)
    evidence: dict[str, float] = Field(default_factory=dict)
    faithfulness: Faithfulness | None = Field(None, description="ERASER comprehensiveness / "
                                              "sufficiency of the product's evidence.")
    lora: FinetuneResult | None = Field(None, description="The fine-tune behind the lora rows.")
    prompt: str = Field("classify", description="Prompt file of the few-shot LLM rows.")
    stacked: StackSummary | None = Field(None, description="The heads BehaviorRAG.fit's stack "
                                         "chose, and the CV loss of every subset.")
    fit_seconds: float | None = Field(None, description="Wall time of BehaviorRAG.fit.")
    plots: list[str] = Field(default_factory=list)
    report: str = ""
    seconds: float = 0.0
    split: SplitInfo | None = Field(None, description="Event tasks: how the parts were cut.")
