"""Evaluation tasks and splits shared by ``eval/`` scripts and the ``behavior-rag eval`` command.

Metrics, features, baselines and plots are exported lazily: they pull in scikit-learn (and
matplotlib for plots), which code that only needs the tasks and splits should not pay for.
"""

from importlib import import_module

from behavior_rag.evaluation.tasks import Split, balanced_sample, purchase_intent, split_by_user

_LAZY = {
    "binary_metrics": "metrics", "multiclass_metrics": "metrics", "confusion": "metrics",
    "expected_calibration_error": "metrics", "best_threshold": "metrics",
    "TaskData": "baselines", "Method": "baselines", "Majority": "baselines",
    "BowLogReg": "baselines", "GradientBoosting": "baselines", "EmbeddingLogReg": "baselines",
    "pr_roc_plot": "plots", "reliability_plot": "plots", "confusion_plot": "plots",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"behavior_rag.evaluation.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Split", "balanced_sample", "purchase_intent", "split_by_user", *_LAZY]
