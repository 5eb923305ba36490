"""API-key authentication: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``.

Policy: a service without a key refuses to start, unless ``insecure_no_auth`` is set, and that
is accepted only when it binds a loopback address (a demo on 127.0.0.1 — never the network).
Keys are compared with :func:`hmac.compare_digest` so response timing does not reveal how many
leading characters matched.

Example:
    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    >>> from behavior_rag.settings import ServeSettings
    >>> check_auth_config(ServeSettings(host="0.0.0.0", insecure_no_auth=True))
    Traceback (most recent call last):
    ...
    behavior_rag.errors.ConfigError: refusing to serve without an API key on a non-loopback host
"""

from __future__ import annotations

import hmac
import ipaddress
import re

from behavior_rag.errors import ConfigError
from behavior_rag.settings import ServeSettings
from behavior_rag.wire.errors import AuthError

MIN_KEY_LENGTH = 16
# query parameters whose values never reach a log line
SECRET_PARAMS = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token)=)[^&\s\"]*")


def redact(text: str) -> str:
    """``text`` with secret query-parameter values replaced (for access logs, see
    :mod:`behavior_rag.service.logs`).

    >>> redact("GET /v1/similar?api_key=s3cret&k=3")
    'GET /v1/similar?api_key=***&k=3'
    """
    return SECRET_PARAMS.sub(r"\1***", text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key(settings: ServeSettings) -> str | None:
    """The configured key, or None (an empty string counts as none)."""
    key = settings.api_key
    if key is not None and not isinstance(key, str):  # SecretStr; a plain str comes from
        key = key.get_secret_value()                 # model_copy, which skips validation
    return key or None


def check_auth_config(settings: ServeSettings) -> None:
    """Refuse a configuration that would expose an unauthenticated (or guessable) service."""
    key = api_key(settings)
    if key is not None:
        if len(key) < MIN_KEY_LENGTH and not is_loopback(settings.host):
            raise ConfigError(f"the API key has {len(key)} characters; a service on a "
                              f"non-loopback host needs at least {MIN_KEY_LENGTH} (e.g. "
                              "`python -c 'import secrets; print(secrets.token_hex(16))'`)",
                              field="serve.api_key")
        return
    if not settings.insecure_no_auth:
        raise ConfigError("no API key: set BEHAVIOR_RAG_SERVE__API_KEY (or --api-key), or pass "
                          "--insecure-no-auth to serve without one on a loopback host",
                          field="serve.api_key")
    if not is_loopback(settings.host):
        raise ConfigError("refusing to serve without an API key on a non-loopback host",
                          field="serve.host", value=settings.host)


def key_dependency(settings: ServeSettings):
    """A FastAPI dependency that raises :class:`AuthError` (401) unless the key matches; None
    when the service runs without a key. Declared with FastAPI's security classes so the
    OpenAPI schema documents both ways of sending the key."""
    from fastapi import Security
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

    key = api_key(settings)
    if key is None:
        return None
    expected = key.encode("utf-8")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
    bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")

    async def require_key(x_api_key: str | None = Security(header),
                          cred: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        given = x_api_key if x_api_key is not None else (cred.credentials if cred else None)
        if not given:
            raise AuthError("missing API key: send X-API-Key or Authorization: Bearer")
        # Header values arrive as latin-1 text; any byte sequence compares safely.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
            raise AuthError("wrong API key")

    return require_key
