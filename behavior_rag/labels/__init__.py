"""Labels from the data a shop has: outcome targets computed from the log itself
(:mod:`~behavior_rag.labels.targets`, applied to a log by :mod:`~behavior_rag.labels.outcomes`)
and label files joined on the shop's own ids
(:mod:`~behavior_rag.labels.files`), and the index's append-only, audited label set
(:mod:`~behavior_rag.labels.labelset`, grown by :mod:`~behavior_rag.labels.book`)."""

from behavior_rag.labels.book import LabelBook, LabelsAdded
from behavior_rag.labels.files import LabelJoin, LabelRow, apply_label_file, read_label_file
from behavior_rag.labels.labelset import LabelEvent, LabelSet, NewLabel
from behavior_rag.labels.outcomes import LabelledSessions, label_sessions
from behavior_rag.labels.targets import (
    EmptyAfterCut,
    InputCut,
    LabelRule,
    Target,
    cut,
    known_targets,
    load_target,
)

__all__ = ["EmptyAfterCut", "InputCut", "LabelBook", "LabelEvent", "LabelJoin", "LabelRow",
           "LabelRule", "LabelSet", "LabelledSessions", "LabelsAdded", "NewLabel", "Target", "apply_label_file", "cut", "known_targets", "label_sessions",
           "load_target", "read_label_file"]
