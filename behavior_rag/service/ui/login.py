"""The web view's login: the API key once per browser session, then an HttpOnly cookie.

The cookie holds ``<issued>.<nonce>.<mac>`` where ``mac`` is an HMAC-SHA256 of the first two
parts keyed by the API key: the key itself never sits in the browser, a cookie stops working
when the key is rotated, and it expires after :data:`MAX_AGE_S`. ``SameSite=Strict`` keeps
other sites from riding on it (every UI page is a GET that changes nothing).

Example:
    >>> c = issue("0123456789abcdef", now=1000.0)
    >>> valid(c, "0123456789abcdef", now=1001.0), valid(c, "another-key-here", now=1001.0)
    (True, False)
    >>> valid(c, "0123456789abcdef", now=1000.0 + MAX_AGE_S + 1)
    False
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "behavior_rag_ui"
MAX_AGE_S = 12 * 3600


def _mac(key: str, payload: str) -> str:
    return hmac.new(key.encode("utf-8"), b"behavior-rag-ui:" + payload.encode(),
                    hashlib.sha256).hexdigest()


def issue(key: str, now: float | None = None) -> str:
    """A new cookie value for a browser that gave ``key``."""
    payload = f"{int(now if now is not None else time.time())}.{secrets.token_hex(12)}"
    return f"{payload}.{_mac(key, payload)}"


def valid(cookie: str | None, key: str, now: float | None = None) -> bool:
    """Whether ``cookie`` was issued under ``key`` and has not expired."""
    if not cookie or cookie.count(".") != 2:
        return False
    issued, nonce, mac = cookie.split(".")
    if not issued.isdigit():
        return False
    age = (now if now is not None else time.time()) - int(issued)
    return 0 <= age <= MAX_AGE_S and hmac.compare_digest(mac, _mac(key, f"{issued}.{nonce}"))


def key_matches(given: str, key: str) -> bool:
    """Constant-time comparison of a typed key with the configured one."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8"))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of the web view only (never another site)."""
    if target and target.startswith("/ui") and "//" not in target and "\\" not in target:
        return target
    return "/ui/"
