"""What the service's access log may show: uvicorn's request lines with secret query parameters
masked and user ids pseudonymised (a client may put raw ids in a path or a query; the log must
not keep them).

User ids sit in ``/v1/profiles/{id}``, ``/ui/users/{id}`` and the ``user_id`` / ``user`` /
``users`` / ``exclude_users`` parameters, also inside a ``next=`` target (the login redirect).
They are replaced by the installation's keyed pseudonym, the form the index stores, so a log
line still joins to the data; without a pseudonymiser they are masked.

Example:
    >>> scrub("GET /v1/profiles/alice?api_key=s3cret&user_id=bob&k=3", lambda u: "u_" + u[0])
    'GET /v1/profiles/u_a?api_key=***&user_id=u_b&k=3'
    >>> scrub("/ui/similar?user_id=bob")
    '/ui/similar?user_id=***'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import quote, unquote, unquote_plus

from behavior_rag.service.auth import redact

USER_PATH = re.compile(r"(/v1/profiles/|/ui/users/)([^?#\s\"]+)")
USER_PARAM = re.compile(r"(?i)([?&](?:user_id|user|users|exclude_users)=)([^&#\s\"]*)")
NEXT_PARAM = re.compile(r"(?i)([?&]next=)([^&#\s\"]*)")


def scrub(text: str, user_ids: Callable[[str], str] | None = None) -> str:
    """``text`` (a request line or target) with secrets masked and user ids pseudonymised."""

    def pseudo(raw: str) -> str:
        if user_ids is None or not raw:
            return "***" if raw else raw
        try:
            return quote(user_ids(raw), safe="")
        except Exception:  # never let a log line fail a request: mask what cannot be mapped
            return "***"

    text = redact(text)
    text = NEXT_PARAM.sub(lambda m: m[1] + quote(scrub(unquote(m[2]), user_ids), safe="/"),
                          text)
    text = USER_PATH.sub(lambda m: m[1] + pseudo(unquote(m[2])), text)
    return USER_PARAM.sub(lambda m: m[1] + pseudo(unquote_plus(m[2])), text)


class AccessLogFilter(logging.Filter):
    """On uvicorn's access logger: every string argument of a record scrubbed."""

    def __init__(self) -> None:
        super().__init__()
        self.user_ids: Callable[[str], str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(scrub(a, self.user_ids) if isinstance(a, str) else a
                                for a in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = scrub(record.msg, self.user_ids)
        return True


def install_access_log_filter(user_ids: Callable[[str], str] | None = None) -> AccessLogFilter:
    """Scrub uvicorn's access log (one filter per process; the latest service's pseudonymiser
    is the one used)."""
    log = logging.getLogger("uvicorn.access")
    f = next((f for f in log.filters if isinstance(f, AccessLogFilter)), None)
    if f is None:
        f = AccessLogFilter()
        log.addFilter(f)
    f.user_ids = user_ids
    return f
