"""Labelling with an analyst: the queue's active-learning order (:mod:`.queue`) and the desk
that serves it with what a decision needs (:mod:`.desk`)."""

from behavior_rag.annotate.desk import LabelDesk, QueueItem, Suggestion
from behavior_rag.annotate.queue import QueueEntry, QueueOrder

__all__ = ["LabelDesk", "QueueEntry", "QueueItem", "QueueOrder", "Suggestion"]
