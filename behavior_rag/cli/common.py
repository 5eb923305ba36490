"""Pieces every CLI module shares: JSON output, the stderr console, loading sessions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.store import read_store
from behavior_rag.settings import Settings
from behavior_rag.types import Session

err = Console(stderr=True)
HUMAN = typer.Option(False, "--human", help="Human-readable output instead of JSON.")


def json_line(obj: Any) -> str:
    """``obj`` as one line of JSON (what :func:`emit` prints)."""
    return json.dumps(obj, ensure_ascii=False, default=str) + "\n"


def emit(obj: Any) -> None:
    """One JSON document per line on stdout."""
    sys.stdout.write(json_line(obj))


def progress(label: str) -> Progress:
    """A progress bar on stderr (hidden when stderr is not a terminal)."""
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def load_sessions(source: Path, fmt: str, settings: Settings) -> list[Session]:
    """A session store folder, or any event log we can ingest."""
    if (source / "manifest.json").exists():
        return read_store(source)
    return load_events(source, fmt, settings=settings).sessions
