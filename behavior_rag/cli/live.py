"""``behavior-rag live``: replay an event log through a running service's live API, as if its
shoppers were browsing now, at a chosen speed.

Example:
    $ export BEHAVIOR_RAG_SERVE__API_KEY=...
    $ behavior-rag live data/clicks.csv --url http://127.0.0.1:8080 --speed 60 --limit 50
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.client import Client
from behavior_rag.errors import ConfigError
from behavior_rag.live.models import LiveAnswer
from behavior_rag.live.replay import replay
from behavior_rag.settings import Settings


def live_cmd(
    source: Path = typer.Argument(..., help="Event log (any format ingest reads) or session "
                                  "store to replay."),
    url: str = typer.Option("http://127.0.0.1:8080", "--url", help="The service."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="BEHAVIOR_RAG_SERVE__API_KEY",
                                          help="The service's key (prefer the environment "
                                          "variable BEHAVIOR_RAG_SERVE__API_KEY)."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Input format of an event log."),
    speed: float = typer.Option(1.0, "--speed", help="How many times faster than the log's "
                                "own clock (0: as fast as the service answers)."),
    limit: int = typer.Option(0, help="At most this many sessions (0 = all)."),
    end: bool = typer.Option(True, "--end/--no-end", help="End each session after its last "
                             "event (else the service's inactivity gap ends it)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary."),
    human: bool = HUMAN,
) -> None:
    """Stream a log through POST /v1/live: one JSON line per moved prediction, then a
    summary (events/s, how far behind the log's clock it fell)."""
    if speed < 0:
        raise ConfigError("--speed must be >= 0 (0: as fast as possible)", field="speed",
                          value=speed)
    sessions = [s for s in load_sessions(source, fmt, Settings()) if s.events]
    if limit:
        sessions = sessions[:limit]

    def show(a: LiveAnswer) -> None:
        if quiet or not a.changed or a.prediction is None:
            return
        p = a.prediction
        if human:
            err.print(f"{a.session_id} after {a.events} events: [bold]{p.label}[/] "
                      f"{p.probability:.2f}")
        else:
            emit({"session_id": a.session_id, "events": a.events, "visible": a.visible,
                  "label": p.label, "probability": p.probability, "threshold": p.threshold,
                  "evidence": [e.text for e in p.evidence]})

    with Client(url, api_key=api_key) as c:
        report = replay(c, sessions, speed=speed, end=end, on_answer=show)
    if human:
        err.print(f"{report.events} events of {report.sessions} sessions in {report.seconds} s "
                  f"({report.events_per_s} events/s); {report.changed} moved predictions")
    else:
        emit(report.model_dump())
