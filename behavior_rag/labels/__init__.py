"""Labels from the data a shop has: outcome targets computed from the log itself
(:mod:`~behavior_rag.labels.targets`, applied to a log by :mod:`~behavior_rag.labels.outcomes`)
and label files joined on the shop's own ids
(:mod:`~behavior_rag.labels.files`)."""

from behavior_rag.labels.files import LabelJoin, LabelRow, apply_label_file, read_label_file
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

__all__ = ["EmptyAfterCut", "InputCut", "LabelJoin", "LabelRow", "LabelRule", "LabelledSessions",
           "Target", "apply_label_file", "cut", "known_targets", "label_sessions",
           "load_target", "read_label_file"]
