"""Evaluation tasks and splits shared by ``eval/`` scripts and the ``behavior-rag eval`` command."""

from behavior_rag.evaluation.tasks import Split, balanced_sample, purchase_intent, split_by_user

__all__ = ["Split", "balanced_sample", "purchase_intent", "split_by_user"]
