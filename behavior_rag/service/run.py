"""Running the service: in the foreground (``behavior-rag serve``) or in a background thread on a
free loopback port (the demo, tests and benchmarks).

Example:
    >>> from behavior_rag import BehaviorRAG, Client
    >>> from behavior_rag.settings import ServeSettings
    >>> rag = BehaviorRAG(index_path="indexes/synth")                        # doctest: +SKIP
    >>> s = ServeSettings(api_key="k")
    >>> with serve_in_background(rag, s) as url:                              # doctest: +SKIP
    ...     print(Client(url, api_key="k").taxonomy().names[:2])
    ('focused_buyer', 'comparison_shopper')
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from behavior_rag.api import BehaviorRAG
from behavior_rag.errors import BehaviorRagError
from behavior_rag.service.errors import already_served  # noqa: F401 - the CLI's name
from behavior_rag.settings import ServeSettings
from behavior_rag.wire.errors import NotReady


def serve_forever(rag: BehaviorRAG, settings: ServeSettings, *, log_level: str = "info") -> None:
    """Serve on ``settings.host:settings.port`` until interrupted (Ctrl-C, SIGTERM).

    One process, one worker: the index lives in this process's memory and is written by it, so
    several workers would each hold (and overwrite) their own copy. Scale with replicas of
    read-only indexes behind a balancer instead.
    """
    import uvicorn

    from behavior_rag.service.app import create_app

    app = create_app(rag, settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level,
                timeout_graceful_shutdown=10, server_header=False)


@contextmanager
def serve_in_background(rag: BehaviorRAG, settings: ServeSettings | None = None, *,
                        ready_timeout_s: float = 300.0, log_level: str = "warning"
                        ) -> Iterator[str]:
    """Start the service in a thread on 127.0.0.1 (a free port), wait until it is ready, yield
    its base URL, and stop it cleanly on exit. ``settings.host``/``port`` are ignored."""
    import uvicorn

    from behavior_rag.service.app import create_app

    settings = (settings or rag.settings.serve).model_copy(update={"host": "127.0.0.1",
                                                                   "port": 0})
    app = create_app(rag, settings)
    # Bind the socket ourselves: port 0 gives a free port with no race between "find a free
    # port" and "bind it".
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on",
                                           timeout_graceful_shutdown=5, server_header=False))
    def run() -> None:
        try:
            server.run(sockets=[sock])
        except SystemExit:  # uvicorn exits on a failed startup; _wait_ready says why
            pass

    thread = threading.Thread(target=run, name=f"behavior-rag-serve-{port}", daemon=True)
    thread.start()
    try:
        _wait_ready(app, server, thread, ready_timeout_s)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _wait_ready(app, server, thread: threading.Thread, timeout_s: float) -> None:
    state = app.state.service
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if state.load_error:  # before "thread stopped": it says why
            raise NotReady(f"the service failed to load: {state.load_error}")
        if not thread.is_alive():
            raise BehaviorRagError("the service thread stopped during startup")
        if server.started and state.ready:
            return
        time.sleep(0.02)
    raise NotReady(f"the service was not ready within {timeout_s} s")
