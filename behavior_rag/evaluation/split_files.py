"""``behavior-rag split``: a store (or event log) into train / dev / test session stores, split
as ``behavior-rag eval`` splits (by user, or by time: :mod:`behavior_rag.evaluation.splits`).

With an outcome target the sessions are labelled and cut first, exactly as ``fit --target``
does, and split as the eval splits them; each part is then written *in full* (every event,
in the source order), so ``fit --target`` and ``classify`` apply the target themselves. Beside
each part, ``<part>_labels.csv`` (``session_id,label``) holds the target's labels: a label file
for ``behavior-rag score``, and the sessions the eval scores (those with something before the
prediction point). ``split.json`` records how it was cut.

Example:
    >>> from behavior_rag.synth import generate
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "parts"
    >>> rep = write_split(generate(120, seed=3).sessions, out, target="purchase")
    >>> sorted(rep.parts), (out / "test_labels.csv").is_file()
    (['dev', 'test', 'train'], True)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from pydantic import BaseModel, Field

from behavior_rag.atomic import replace_file
from behavior_rag.errors import ConfigError
from behavior_rag.evaluation.splits import SplitInfo, known_at_of, split_parts
from behavior_rag.ingest.store import write_store
from behavior_rag.labels.outcomes import label_sessions
from behavior_rag.labels.targets import load_target
from behavior_rag.types import Session

PARTS: tuple[str, ...] = ("train", "dev", "test")


class SplitFiles(BaseModel):
    """What :func:`write_split` wrote (also ``split.json`` in the folder)."""

    out: str
    target: str | None = None
    input: str | None = Field(None, description="The target's prediction point.")
    split: SplitInfo
    sessions_in: int
    labelling: dict | None = Field(None, description="The target's counts: labelled, dropped "
                                   "with nothing before the prediction point, censored.")
    parts: dict[str, str] = Field(default_factory=dict, description="part -> store folder.")
    label_files: dict[str, str] = Field(default_factory=dict, description="part -> "
                                        "session_id,label CSV.")
    labels: dict[str, dict[str, int]] = Field(default_factory=dict, description="Sessions "
                                              "per label in each part.")


def write_split(sessions: Sequence[Session], out: str | Path, *, by: str = "user",
                seed: int = 0, dev_frac: float = 0.2, test_frac: float = 0.25,
                target: str | Path | None = None, input: str | None = None,
                lock_timeout_s: float = 10.0) -> SplitFiles:
    """Split ``sessions`` (module docstring) into ``out/{train,dev,test}`` stores, their label
    files and ``out/split.json``. Without ``target`` the sessions are split as they are and
    their own labels (if any) go into the label files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out is a file: give a folder for the parts", field="out",
                          value=str(out))
    labelling = None
    if target is not None:
        tgt = load_target(target).with_input(input)
        lab = label_sessions(sessions, tgt)
        rows, known = lab.sessions, known_at_of(sessions, tgt)
        labelling = lab.model_dump(exclude={"sessions"})
    else:
        tgt, rows, known = None, list(sessions), None
    if not rows:
        raise ConfigError("nothing to split: no session is left after labelling",
                          field="target", value=str(target), labelling=labelling)
    parts, info = split_parts(rows, by, seed=seed, dev_frac=dev_frac, test_frac=test_frac,
                              known_at=known)
    full = {s.session_id: s for s in sessions}
    rep = SplitFiles(out=str(out), target=tgt.name if tgt else None,
                     input=str(tgt.input) if tgt else None, split=info,
                     sessions_in=len(sessions), labelling=labelling)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in zip(PARTS, (parts.train, parts.dev, parts.test)):
        if not part:
            continue
        write_store([full[s.session_id] for s in part], out / name,
                    info={"split": {"part": name, **info.model_dump(mode="json")}},
                    lock_timeout_s=lock_timeout_s)
        rep.parts[name] = str(out / name)
        _label_file(part, out / f"{name}_labels.csv", rep, name)
    replace_file(out / "split.json", json.dumps(rep.model_dump(mode="json"), indent=1) + "\n")
    return rep


def _label_file(part: Sequence[Session], path: Path, rep: SplitFiles, name: str) -> None:
    labelled = [s for s in part if s.label]
    if not labelled:
        return
    frame = pl.DataFrame({"session_id": [s.session_id for s in labelled],
                          "label": [s.label for s in labelled]})
    replace_file(path, frame.write_csv())
    rep.label_files[name] = str(path)
    rep.labels[name] = dict(Counter(s.label for s in labelled))
