"""The evaluation tasks: load a file in the task's original format and split it honestly.

* ``uci-intent`` — UCI Online Shoppers (one aggregate session per row), label ``purchase`` from
  ``Revenue``; stratified split fixed by seed. ``drop=("PageValues",)`` removes the column that
  leaks the label (it is computed from pages that preceded purchases).
* ``taobao-intent`` — Taobao UserBehavior: sessions by inactivity gap, input = the events before
  the first cart/purchase, label = the session contains a purchase; split by user, or by time
  (``split="time"``: earlier days train, later days test, :mod:`~behavior_rag.evaluation.splits`).
* ``synth-personas`` — the SYNTHETIC persona generator (or a session store written by
  ``behavior-rag synth --out``), 8 labels; split by user.

Validation (thresholds, the stack, the cascade, calibration) always comes out of the training part.

Example:
    >>> t = load_task("synth-personas", seed=1, synth_n=200)
    >>> len(t.train) > len(t.test) > 0 and not {s.user_id for s in t.train} & {s.user_id for s in t.test}
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from behavior_rag.errors import ConfigError
from behavior_rag.evaluation.splits import SplitInfo, known_at_of, split_parts
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.store import read_store
from behavior_rag.labels.outcomes import label_sessions
from behavior_rag.labels.targets import load_target
from behavior_rag.settings import Settings, default_settings
from behavior_rag.synth import generate
from behavior_rag.types import Session

TASKS: tuple[str, ...] = ("uci-intent", "taobao-intent", "synth-personas")
DEFAULT_FILES = {
    "uci-intent": Path("uci_online_shoppers") / "online_shoppers_intention.dev.csv",
    "taobao-intent": Path("taobao_userbehavior") / "UserBehavior.dev.csv",
}


@dataclass
class TaskSpec:
    name: str
    kind: Literal["uci", "events"]
    taxonomy: str
    positive: str | None  # binary tasks: the positive class
    fmt: str | None  # ingest adapter of the task's original file format
    # the metric the task is judged on; the stacker picks its parts by this metric in CV
    metric: Literal["aupr", "auroc", "log_loss"] = "log_loss"
    # the outcome target users fit with (`fit --target`): labels and prediction point
    target: str | None = None

SPECS = {
    "uci-intent": TaskSpec("uci-intent", "uci", "uci_intent", "purchase", "uci", "aupr"),
    "taobao-intent": TaskSpec("taobao-intent", "events", "purchase_intent", "will_buy", "taobao",
                              "auroc", target="purchase"),
    "synth-personas": TaskSpec("synth-personas", "events", "personas", None, None),
}


@dataclass
class LoadedTask:
    spec: TaskSpec
    train: list[Session]
    val: list[Session]
    test: list[Session]
    classes: list[str]
    protocol: str  # how it was split, for the report
    sources: list[str] = field(default_factory=list)
    all_rows: list[Session] = field(default_factory=list)  # train+val+test, for k-fold CV
    # every user's recorded sessions in full (before any task cut), for cross-session facts:
    # the product looks back only at a user's sessions that ended before the one it labels
    history: list[Session] = field(default_factory=list)
    split: SplitInfo | None = None  # event tasks: how the parts were cut (by user or time)

def _read(spec: TaskSpec, path: Path, drop: Sequence[str],
          full: list[Session] | None = None, settings: Settings | None = None) -> list[Session]:
    """The task's rows from ``path``; ``full`` collects the sessions before any task cut."""
    if spec.fmt is None:  # a synthetic session store
        rows = read_store(path)
        if full is not None:
            full.extend(rows)
        return rows
    sessions = load_events(path, spec.fmt, settings=settings).sessions
    if full is not None and spec.kind != "uci":
        full.extend(sessions)
    if spec.target is not None:  # what `behavior-rag fit --target` does with the log
        sessions = label_sessions(sessions, spec.target).sessions
    if drop:
        sessions = [s.model_copy(update={"aggregates": {k: v for k, v in s.aggregates.items()
                                                         if k not in drop}})
                    for s in sessions]
    return sessions

def _stratified(sessions: list[Session], frac: float, seed: int):
    from sklearn.model_selection import train_test_split

    if not frac:
        return list(sessions), []
    y = [s.label for s in sessions]
    a, b = train_test_split(sessions, test_size=frac, random_state=seed, stratify=y)
    return list(a), list(b)


def _parts(spec: TaskSpec, rows: list[Session], full: list[Session], split: str, seed: int,
           val_frac: float, test_frac: float):
    """``(train, val, test, words, info)``: aggregate rows stratified by label, event
    sessions by user or time (:func:`split_parts`, as ``behavior-rag split`` does)."""
    if spec.kind == "uci":
        if split != "user":
            raise ConfigError(f"task {spec.name}: a time split needs timed events; its rows "
                              "are whole-session aggregates", field="split", value=split)
        tr, te = _stratified(rows, test_frac, seed)
        tr, val = _stratified(tr, val_frac, seed + 1)
        return tr, val, te, (f"split stratified by label (seed {seed}): test {test_frac:.0%}; "
                             f"validation = {val_frac:.0%} of the training part (stratified, "
                             f"seed {seed + 1})"), None
    target = load_target(spec.target) if spec.target else None
    parts, info = split_parts(rows, split, seed=seed, dev_frac=val_frac, test_frac=test_frac,
                              known_at=known_at_of(full, target))
    return parts.train, parts.dev, parts.test, info.protocol(), info


def load_task(task: str, *, data: str | Path | None = None, train: str | Path | None = None,
              test: str | Path | None = None, seed: int = 0, drop: Sequence[str] = (),
              data_dir: str | Path | None = None, synth_n: int = 1500,
              test_frac: float = 0.25, val_frac: float = 0.2,
              split: str = "user", settings: Settings | None = None) -> LoadedTask:
    """Load ``task`` from ``data`` (split internally, ``split`` by user or time) or from
    ``train`` + ``test`` files (validation split off the training file the same way).
    ``settings``: ingest's (pseudonym key, session gap), as ``behavior-rag ingest`` reads."""
    if task not in SPECS:
        raise ConfigError(f"unknown task {task!r}; choose one of {list(TASKS)}", field="task",
                          value=task)
    spec = SPECS[task]
    if (train is None) != (test is None):
        raise ConfigError("give both --train and --test, or --data", field="train/test")
    sources: list[str] = []
    full: list[Session] = []
    if train is not None:
        tr, te = (_read(spec, Path(f), drop, full, settings) for f in (train, test))
        sources = [str(train), str(test)]
        tr, val, _, words, info = _parts(spec, tr, full, split, seed, val_frac, 0.0)
        protocol = ("fitted on the --train file, reported on the --test file; "
                    + words[words.index("validation"):])
    else:
        if data is None and spec.fmt is not None:
            data = Path(data_dir or (settings or default_settings()).data_dir) \
                / DEFAULT_FILES[task]
        if data is None:
            rows = generate(synth_n, seed=seed).sessions
            full = list(rows)
            sources = [f"SYNTHETIC generate({synth_n}, seed={seed})"]
        else:
            rows = _read(spec, Path(data), drop, full, settings)
            sources = [str(data)]
        tr, val, te, words, info = _parts(spec, rows, full, split, seed, val_frac, test_frac)
        protocol = f"one file {words}"
    if not tr or not te:
        raise ConfigError(f"task {task}: empty train or test part", field="data")
    classes = sorted({s.label for s in tr + val + te if s.label})
    if spec.positive and spec.positive not in classes:
        raise ConfigError(f"task {task}: no {spec.positive!r} rows in the data", field="label")
    if len(classes) < 2:
        raise ConfigError(f"task {task}: need two labels or more, found {classes}", field="label")
    return LoadedTask(spec, tr, val, te, classes, protocol, sources, tr + val + te, full,
                      split=info)
