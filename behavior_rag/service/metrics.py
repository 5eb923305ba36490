"""Prometheus text metrics for ``GET /metrics``: requests, latency, in-flight, rejections.

Written by hand (the exposition format is a few lines of text) so the service needs no client
library and each app has its own counters — tests start several apps in one process, and a global
registry would mix them up.

Example:
    >>> m = Metrics()
    >>> m.observe("/v1/similar", "POST", 200, 0.012)
    >>> m.reject("overload")
    >>> 'behavior_rag_http_requests_total{route="/v1/similar",method="POST",status="200"} 1' \\
    ...     in m.render()
    True
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

# Seconds. kNN classification and search take milliseconds; LLM classification up to seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PREFIX = "behavior_rag"


def _label(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: object) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in kv.items()) + "}"


class Metrics:
    """Thread-safe counters for one app; :meth:`render` gives the Prometheus text format."""

    def __init__(self, buckets: Iterable[float] = BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.rejected: Counter[str] = Counter()
        # route -> per-bucket counts (non-cumulative; summed on render), sum, count
        self._hist: dict[str, tuple[list[int], list[float]]] = {}
        self.in_flight = 0
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, status)] += 1
            counts, total = self._hist.setdefault(route, ([0] * (len(self.buckets) + 1), [0.0]))
            i = next((j for j, b in enumerate(self.buckets) if seconds <= b), len(self.buckets))
            counts[i] += 1
            total[0] += seconds

    def reject(self, reason: str) -> None:
        """Count a request turned away: ``overload``, ``timeout``, ``body_too_large``."""
        with self._lock:
            self.rejected[reason] += 1

    def gauge(self, name: str, help_: str, read: Callable[[], float]) -> None:
        """A value read at scrape time (e.g. busy model slots, index size)."""
        self.gauges[name] = (help_, read)

    def render(self) -> str:
        p = PREFIX
        with self._lock:
            lines = [f"# HELP {p}_http_requests_total HTTP requests by route, method and status.",
                     f"# TYPE {p}_http_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(f"{p}_http_requests_total"
                             f"{_labels(route=route, method=method, status=status)} {n}")
            lines += [f"# HELP {p}_http_request_duration_seconds Request latency by route.",
                      f"# TYPE {p}_http_request_duration_seconds histogram"]
            for route, (counts, total) in sorted(self._hist.items()):
                cum = 0
                for b, c in zip((*self.buckets, float("inf")), counts):
                    cum += c
                    le = "+Inf" if b == float("inf") else repr(b)
                    lines.append(f"{p}_http_request_duration_seconds_bucket"
                                 f"{_labels(route=route, le=le)} {cum}")
                lines.append(f"{p}_http_request_duration_seconds_sum{_labels(route=route)} "
                             f"{total[0]:.6f}")
                lines.append(f"{p}_http_request_duration_seconds_count{_labels(route=route)} "
                             f"{cum}")
            lines += [f"# HELP {p}_http_requests_in_flight Requests being served now.",
                      f"# TYPE {p}_http_requests_in_flight gauge",
                      f"{p}_http_requests_in_flight {self.in_flight}",
                      f"# HELP {p}_rejected_total Requests turned away, by reason "
                      "(overload, timeout, body_too_large).",
                      f"# TYPE {p}_rejected_total counter"]
            for reason in sorted({"overload", "timeout", "body_too_large", *self.rejected}):
                lines.append(f"{p}_rejected_total{_labels(reason=reason)} "
                             f"{self.rejected[reason]}")
        for name, (help_, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {p}_{name} {help_}", f"# TYPE {p}_{name} gauge",
                      f"{p}_{name} {float(read()):g}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware (outermost): counts every response, 413s and 500s included.

    Routes are labelled by their template (``/v1/similar``); paths that match no route are
    ``other``, so random URLs cannot blow up the number of series.
    """

    def __init__(self, app, metrics: Metrics, known_paths: Callable[[], set[str]]) -> None:
        self.app, self.metrics, self.known_paths = app, metrics, known_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before answering, the server answers 500
        t0 = time.perf_counter()

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m = self.metrics
        with m._lock:
            m.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            with m._lock:
                m.in_flight -= 1
            route = getattr(scope.get("route"), "path", None)
            if route is None:  # rejected before routing (413 on Content-Length) or no match
                route = scope["path"] if scope["path"] in self.known_paths() else "other"
            m.observe(route, scope["method"], status, time.perf_counter() - t0)
