"""``behavior-rag ingest`` / ``render`` / ``synth``: event logs and synthetic data in, session
stores and text out.

Example:
    $ behavior-rag ingest ../shared/data/taobao_userbehavior/UserBehavior.dev.csv --out data/taobao
    $ behavior-rag ingest clicks.csv --out data/shop
    $ behavior-rag ingest orders.csv --out data/shop --append --map event_type_constant=purchase
    $ behavior-rag ingest clicks.csv --out data/shop --map event_type=action --type-map pv=view
    $ behavior-rag render data/taobao --limit 3 --human
    $ behavior-rag synth --n 500 --seed 1 --out data/synth
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from pydantic import ValidationError

from behavior_rag.cli.common import HUMAN, emit, err, load_sessions, progress
from behavior_rag.errors import ConfigError
from behavior_rag.ingest.append import append_events
from behavior_rag.ingest.formats import FORMATS
from behavior_rag.ingest.inspect import inspect_file
from behavior_rag.ingest.load import MAX_GAP_MINUTES, check_gap, load_events
from behavior_rag.ingest.models import ColumnMapping, ReadOptions
from behavior_rag.ingest.sniff import parse_delimiter
from behavior_rag.ingest.store import check_store_target, write_store
from behavior_rag.ingest.target import check_append_target
from behavior_rag.render import render
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.types import check_timezone


def _settings(gap_minutes: float | None = None, mode: str | None = None,
              pseudonymize: bool | None = None, max_tokens: int | None = None) -> Settings:
    base = Settings()
    ingest = base.ingest.model_copy(update={k: v for k, v in {
        "session_gap_minutes": gap_minutes, "mode": mode, "pseudonymize": pseudonymize}.items()
        if v is not None})
    render_s = base.render.model_copy(update={"max_tokens": max_tokens} if max_tokens else {})
    return base.model_copy(update={"ingest": ingest, "render": render_s})


def _mapping(path: Path | None, pairs: list[str], types: Sequence[str] = ()
             ) -> ColumnMapping | None:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read mapping file: {e}", file=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError("a mapping file holds FIELD: COLUMN pairs", file=str(path))
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError("--map takes FIELD=COLUMN", value=pair)
        k, v = pair.split("=", 1)
        data[k.strip()] = v.strip() or None  # FIELD= (empty) unmaps the field
    for pair in types:
        value, sep, kind = pair.rpartition("=")
        if not sep or not value.strip() or not kind.strip():
            raise ConfigError("--type-map takes SOURCE_VALUE=EVENT_TYPE (e.g. pv=view)",
                              field="type_map", value=pair)
        data["type_map"] = {**(data.get("type_map") or {}), value.strip(): kind.strip()}
    if not data:
        return None
    try:
        return ColumnMapping.model_validate(data)
    except ValidationError as e:  # name the offending field
        first = e.errors()[0]
        field = ".".join(map(str, first["loc"])) or None
        hint = f" (fields: {', '.join(ColumnMapping.model_fields)})" \
            if first["type"] == "extra_forbidden" else ""
        raise ConfigError(f"invalid column mapping: {field}: {first['msg']}{hint}",
                          file=str(path) if path else None, field=field,
                          value=str(first.get("input"))[:100]) from e


def _read_options(delimiter: str | None, nulls: list[str], events_path: str | None = None,
                  timezone: str | None = None) -> ReadOptions:
    """``--delimiter``, ``--null TOKEN`` / ``--null COLUMN=TOKEN`` and ``--timezone`` as read
    options."""
    if timezone is not None:
        try:
            check_timezone(timezone)
        except ValueError as e:
            raise ConfigError(str(e), field="timezone", value=timezone) from e
    plain = [n for n in nulls if "=" not in n]
    per_column: dict[str, list[str]] = {}
    for n in nulls:
        if "=" in n:
            col, tok = n.split("=", 1)
            if not col.strip():
                raise ConfigError("--null takes TOKEN or COLUMN=TOKEN", field="null", value=n)
            per_column.setdefault(col.strip(), []).append(tok.strip())
    return ReadOptions(delimiter=parse_delimiter(delimiter) if delimiter is not None else None,
                       null_values=[t.strip() for t in plain] if plain else None,
                       column_nulls=per_column, events_path=events_path or None,
                       timezone=timezone)


def _check_args(mode: str | None, gap_minutes: str | None, out: Path | None,
                append: bool = False) -> float | None:
    """Validate the arguments before any reading; returns the gap in minutes (or None)."""
    if mode not in (None, "strict", "lenient"):
        raise ConfigError("mode must be strict or lenient", field="mode", value=mode)
    gap = None
    if gap_minutes is not None:
        try:
            gap = float(gap_minutes)
        except ValueError as e:
            raise ConfigError(f"the session gap must be a number of minutes > 0 and <= "
                              f"{MAX_GAP_MINUTES} (a year); 30 is the usual",
                              field="gap_minutes", value=gap_minutes) from e
        check_gap(gap)
    if out is not None:
        (check_append_target if append else check_store_target)(out)
    return gap


def ingest_cmd(
    path: Path = typer.Argument(..., help="Event log: CSV, JSONL, Parquet, or a built-in format."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Session store folder to write."),
    fmt: str = typer.Option("auto", "--format", "-f",
                            help=f"auto or one of: {', '.join(sorted(FORMATS))}"),
    mode: Optional[str] = typer.Option(None, help="strict (default): any bad row fails the load, "
                                       "nothing written. lenient: skip bad rows, count reasons."),
    gap_minutes: Optional[str] = typer.Option(None, help="Inactivity gap in minutes (> 0) that "
                                              "splits sessions."),
    mapping_file: Optional[Path] = typer.Option(None, "--mapping", help="YAML/JSON column mapping."),
    map_: list[str] = typer.Option([], "--map", help="FIELD=COLUMN, repeatable."),
    type_map: list[str] = typer.Option([], "--type-map", help="SOURCE_VALUE=EVENT_TYPE "
                                       "(e.g. pv=view, buy=purchase), repeatable: what the "
                                       "event type column's values mean."),
    delimiter: Optional[str] = typer.Option(None, help="CSV delimiter (default: sniffed); one "
                                            "character or tab, comma, semicolon, pipe."),
    null: list[str] = typer.Option([], "--null", help="TOKEN read as missing in every column "
                                   "(replaces the default NA, null), or COLUMN=TOKEN; repeatable."),
    events_path: Optional[str] = typer.Option(None, help="JSONL/Parquet column holding each "
                                              "session's list of events (default: the only "
                                              "list-of-objects column)."),
    timezone: Optional[str] = typer.Option(None, help="IANA zone of the source's shoppers "
                                           "(time-of-day facts; naive times are read there); "
                                           "default: the format's (taobao: Asia/Shanghai), "
                                           "else UTC."),
    append: bool = typer.Option(False, "--append", help="Join this file's events into the "
                                "existing session store --out instead of replacing it: by "
                                "source session id, else by user within the session gap (the "
                                "store's unless --gap-minutes); exactly repeated events are "
                                "dropped. Each file takes its own --map / --mapping."),
    no_pseudonymize: bool = typer.Option(False, "--no-pseudonymize",
                                         help="Keep raw user ids (not recommended)."),
    inspect: bool = typer.Option(False, "--inspect", help="Only look at the file: type, "
                                 "delimiter, columns, timestamp format and a proposed mapping "
                                 "(YAML on stdout with --human); nothing is written."),
    human: bool = HUMAN,
) -> None:
    """Read an event log, sessionise it and write a parquet session store."""
    gap = _check_args(mode, gap_minutes, out, append)
    if inspect:
        _inspect(path, fmt, _read_options(delimiter, null, events_path, timezone), human)
        return
    if out is None:
        raise ConfigError("--out is required (the session store folder to write)", field="out")
    settings = _settings(gap, mode, False if no_pseudonymize else None)
    options = _read_options(delimiter, null, events_path, timezone)
    mapping = _mapping(mapping_file, map_, type_map)
    with progress("ingesting") as bar:
        task = bar.add_task("ingest", total=None)
        if append:  # reads, joins and commits under the store's writer lock
            result = append_events(path, out, fmt, mapping=mapping, settings=settings,
                                   options=options, gap_minutes=gap)
        else:
            result = load_events(path, fmt, mapping=mapping, settings=settings,
                                 options=options)
        bar.update(task, total=1, completed=1)
    if not append:
        write_store(result.sessions, out, info={"ingest": result.report.model_dump()},
                    lock_timeout_s=settings.index.lock_timeout_s)
    report = result.report.model_dump() | {"store": str(out)}
    if human:
        r = result.report
        err.print(f"[bold]{r.file}[/] ({r.format}, {r.mode}): {r.rows_read} rows, {r.events} "
                  f"events, {r.sessions} sessions, {r.users} users in {r.seconds}s -> {out}")
        if r.rows_skipped:
            err.print(f"skipped {r.rows_skipped} rows: {r.skipped_by_reason}")
        if r.append is not None:
            a = r.append
            err.print(f"appended: {a.events_joined} events joined {a.sessions_touched} existing "
                      f"session(s) ({a.events_joined_by_session_id} by session id, "
                      f"{a.events_joined_by_gap} by user within {a.gap_minutes:g} min), "
                      f"{a.events_in_new_sessions} started {a.sessions_new} new session(s), "
                      f"{a.duplicates_dropped} duplicate(s) dropped; the store now has "
                      f"{a.store_sessions} sessions, {a.store_events} events", soft_wrap=True)
        if not r.users_known:
            err.print(f"users: {r.known_users} known ({r.known_user_sessions} session(s)); "
                      f"{r.anonymous_sessions} session(s) without a user id got one anonymous "
                      "user each (not people)")
    else:
        emit(report)


def _inspect(path: Path, fmt: str, options: ReadOptions, human: bool) -> None:
    ins = inspect_file(path, fmt, options)
    if not human:
        emit(ins.model_dump())
        return
    err.print(f"[bold]{ins.file}[/]: {ins.file_type}, format {ins.format}"
              + (f", delimiter {ins.delimiter!r}" if ins.delimiter else "")
              + (f", events in {ins.events_path!r}" if ins.events_path else "")
              + f"; {ins.rows_sampled} rows sampled", soft_wrap=True)
    for c in ins.columns:
        err.print(f"  {c.name:<24} null {c.null_rate:>6.1%}  {c.distinct:>6} distinct  "
                  f"e.g. {', '.join(c.samples[:3])}", soft_wrap=True, highlight=False)
    err.print(f"timestamp format {ins.timestamp_format}, resolution {ins.timestamp_resolution}")
    print(ins.mapping_yaml, end="")  # stdout: redirect it to a file, edit, pass --mapping


def render_cmd(
    source: Path = typer.Argument(..., help="Session store folder, or an event log to ingest."),
    fmt: str = typer.Option("auto", "--format", "-f"),
    session: list[str] = typer.Option([], "--session", "-s", help="Session id(s) to show."),
    limit: int = typer.Option(10, help="At most this many sessions (0 = all)."),
    max_tokens: Optional[int] = typer.Option(None, help="Token budget per session."),
    human: bool = HUMAN,
) -> None:
    """Print sessions as text (JSON lines: session_id, user_id, label, text)."""
    settings = _settings(max_tokens=max_tokens)
    sessions = load_sessions(source, fmt, settings)
    if session:
        wanted = set(session)
        sessions = [s for s in sessions if s.session_id in wanted]
        missing = wanted - {s.session_id for s in sessions}
        if missing:
            raise ConfigError("session id(s) not found", value=sorted(missing)[:5])
    if limit:
        sessions = sessions[:limit]
    with progress("rendering") as bar:
        task = bar.add_task("render", total=len(sessions))
        for s in sessions:
            text = render(s, settings=settings)
            if human:
                print(f"## {s.session_id} (user {s.user_id}"
                      + (f", label {s.label}" if s.label else "") + f")\n{text}\n")
            else:
                emit({"session_id": s.session_id, "user_id": s.user_id, "label": s.label,
                       "text": text})
            bar.advance(task)


def synth_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Session store folder to write."),
    n: int = typer.Option(1000, "--n", help="Number of sessions."),
    seed: int = typer.Option(0),
    mix: Optional[str] = typer.Option(None, help="persona=weight,... (default: uniform)."),
    human: bool = HUMAN,
) -> None:
    """Write a SYNTHETIC labelled dataset (persona sessions) as a session store."""
    weights = None
    if mix:
        weights = {}
        for part in mix.split(","):
            name, _, w = part.partition("=")
            try:
                weights[name.strip()] = float(w) if w else 1.0
            except ValueError as e:
                raise ConfigError("mix weights must be numbers", field="mix", value=part) from e
    data = generate(n, seed=seed, mix=weights)
    manifest = write_store(data.sessions, out, info={"synthetic": True, "seed": seed,
                                                     "mix": data.mix})
    if human:
        err.print(f"wrote {manifest.sessions} synthetic sessions of {manifest.users} users to "
                  f"{out}: {manifest.labels}")
    else:
        emit(manifest.model_dump() | {"store": str(out)})
