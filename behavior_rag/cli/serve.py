"""``behavior-rag serve``: the HTTP service over one index (needs the ``serve`` extra).

Example:
    $ export BEHAVIOR_RAG_SERVE__API_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    $ behavior-rag serve --index indexes/synth --port 8080
    $ behavior-rag serve --index indexes/synth --insecure-no-auth     # loopback only, no key
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional

import typer

from behavior_rag.api import BehaviorRAG
from behavior_rag.cli.common import emit
from behavior_rag.errors import ConfigError
from behavior_rag.index.lock import served
from behavior_rag.service.auth import api_key as configured_key
from behavior_rag.service.auth import check_auth_config
from behavior_rag.service.run import already_served, serve_forever
from behavior_rag.settings import Settings


def serve_cmd(
    index: Path = typer.Option(..., "--index", "-i", help="Index folder to serve (built with "
                               "`behavior-rag index build`)."),
    host: Optional[str] = typer.Option(None, help="Bind address (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default 8080)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Required key (prefer "
                                          "BEHAVIOR_RAG_SERVE__API_KEY: the command line is "
                                          "visible to other users in `ps`)."),
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth", help="Serve without a "
                                          "key; refused unless the host is a loopback address."),
    llm: Optional[str] = typer.Option(None, "--llm", help="local | vllm | none (kNN only)."),
    max_concurrency: Optional[int] = typer.Option(None, help="Model calls at once (default 2)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve classification and similarity over HTTP (JSON; OpenAPI at /docs)."""
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"the HTTP service needs the 'serve' extra ({', '.join(missing)} "
                          "missing): pip install 'behavior_rag[serve]'")
    s = Settings()
    serve = {k: v for k, v in {"host": host, "port": port, "api_key": api_key,
                               "max_concurrency": max_concurrency}.items() if v is not None}
    if insecure_no_auth:
        serve["insecure_no_auth"] = True
    # model_validate (not model_copy) so the options are checked like env vars would be.
    upd = {"serve": s.serve.model_validate(s.serve.model_dump() | serve)}
    if llm:
        upd["llm"] = s.llm.model_validate(s.llm.model_dump() | {"backend": llm})
    s = s.model_copy(update=upd)
    check_auth_config(s.serve)  # before loading anything: fail fast on an unsafe setup
    if not (index / "config.json").is_file():
        raise ConfigError("no index in this folder; build one first with `behavior-rag index "
                          "build SOURCE --index PATH`", file=str(index))
    if served(index):  # a second service would never see the first one's commits
        raise already_served(index)
    # our server log at --log-level (library chatter still needs -v: behavior_rag.cli.verbosity)
    logging.getLogger("behavior_rag").setLevel(log_level.upper())
    emit({"serving": f"http://{s.serve.host}:{s.serve.port}", "index": str(index),
          "auth": "api-key" if configured_key(s.serve) else "none",
          "llm": s.llm.backend, "max_concurrency": s.serve.max_concurrency})
    serve_forever(BehaviorRAG(s, index), s.serve, log_level=log_level)
