"""``behavior-rag classify``: label sessions with the few-shot classifier over a labelled index.

Example:
    $ behavior-rag classify data/new_sessions --index indexes/synth --limit 20 --human
    $ behavior-rag classify data/new_sessions --index indexes/synth --out labels.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from behavior_rag import frames
from behavior_rag.api import BehaviorRAG
from behavior_rag.atomic import replace_file
from behavior_rag.cli.common import HUMAN, emit, err, json_line, load_sessions, progress
from behavior_rag.errors import ConfigError
from behavior_rag.settings import Settings
from behavior_rag.types import PatternPrediction

OUT_FORMATS = ("json", *frames.FILE_FORMATS)
OUT = typer.Option(None, "--out", "-o", help="Write the predictions to this file (atomically; "
                   "its folder must exist) instead of stdout.")
OUT_FORMAT = typer.Option(
    None, "--out-format", help="json: one PatternPrediction JSON document a line (the default "
    "output); jsonl, parquet, csv: one row per prediction (behavior_rag.frames: read back with "
    "frames.read_frame + from_polars). jsonl and parquet keep evidence, against, voters and "
    "probabilities nested; csv cannot hold nested columns, so there they are JSON text. "
    "Default: from --out's suffix (.parquet, .jsonl, .csv), else json. parquet needs --out.")


def _out_format(out: Path | None, fmt: str | None, human: bool) -> str:
    """The output format, or a ConfigError for a combination that cannot work (checked before
    any session is classified, so a typo costs nothing)."""
    if fmt is None:
        fmt = frames.SUFFIXES.get(out.suffix.lower(), "json") if out else "json"
    if fmt not in OUT_FORMATS:
        raise ConfigError(f"unknown --out-format {fmt!r}; known: {list(OUT_FORMATS)}",
                          field="out_format", value=fmt)
    if out is None and fmt == "parquet":
        raise ConfigError("parquet is binary and is not written to stdout: pass --out FILE",
                          field="out_format", value=fmt)
    if out is None and human and fmt != "json":
        raise ConfigError(f"--human prints text, not {fmt}: drop --human or pass --out FILE",
                          field="human")
    if out is not None and out.is_dir():
        raise ConfigError("--out is a folder: pass a file name", field="out", value=str(out))
    if out is not None and not out.parent.is_dir():
        raise ConfigError(f"the folder of --out does not exist: {out.parent}", field="out",
                          value=str(out))
    return fmt


def _write(preds: list[PatternPrediction], fmt: str, out: Path | None) -> None:
    if fmt == "json" and out is None:
        for p in preds:
            emit(p.model_dump(mode="json"))
        return
    if fmt == "json":
        data: str | bytes = "".join(json_line(p.model_dump(mode="json")) for p in preds)
    else:
        data = frames.encode(frames.to_polars(preds, kind="prediction"), fmt)
    if out is not None:
        replace_file(out, data)
    else:  # jsonl / csv: text
        sys.stdout.write(data.decode() if isinstance(data, bytes) else data)


def classify_cmd(
    source: Path = typer.Argument(..., help="Session store or event log to label."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="Labelled index folder."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Input format of an event log."),
    limit: int = typer.Option(0, help="At most this many sessions (0 = all)."),
    llm: Optional[str] = typer.Option(None, "--llm", help="A registered LLM backend: local | "
                                      "vllm | none (heads only) | a plugin's."),
    voters: bool = typer.Option(False, "--voters", help="Also list the similar labelled "
                                "sessions behind each label when the model does not read "
                                "them anyway (a facts-only model then embeds and searches)."),
    out: Optional[Path] = OUT,
    out_format: Optional[str] = OUT_FORMAT,
    human: bool = HUMAN,
) -> None:
    """Label sessions: JSON lines of PatternPrediction (label, probabilities, evidence, ...),
    or a jsonl / parquet / csv table of them (--out-format, --out)."""
    how = _out_format(out, out_format, human)
    s = Settings()
    if llm:
        s = s.model_copy(update={"llm": s.llm.model_validate(s.llm.model_dump() | {
            "backend": llm})})
    rag = BehaviorRAG(s, index)
    sessions = load_sessions(source, fmt, rag.settings)
    if limit:
        sessions = sessions[:limit]
    with progress("classifying") as bar:
        task = bar.add_task("classify", total=len(sessions))
        preds = rag.classify_many(sessions, voters=voters,
                                  progress=lambda d, t: bar.update(task, completed=d))
    if human:
        for p in preds:
            flag = " (abstained)" if p.abstained else ""
            err.print(f"{p.session_id}: [bold]{p.label}[/]{flag} — {p.explanation}")
    if out is not None or not human:
        _write(preds, how, out)
