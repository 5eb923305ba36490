"""Keyed pseudonyms for user ids (HMAC-SHA256), so stores and prompts never hold raw ids.

The key comes from settings, or is created once per installation under ``Settings.home`` and
reused, so the same raw id maps to the same pseudonym across runs but cannot be reversed or
recomputed without the key.

Example:
    >>> p = Pseudonymizer(b"secret")
    >>> p("12345") == p("12345"), p("12345").startswith("u_")
    (True, True)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from behavior_rag.atomic import create_file_once
from behavior_rag.settings import Settings


class Pseudonymizer:
    """Maps raw user ids to ``u_<16 hex>`` with a keyed hash."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[str, str] = {}

    def __call__(self, raw: str) -> str:
        out = self._cache.get(raw)
        if out is None:
            digest = hmac.new(self._key, raw.encode("utf-8", "surrogatepass"), hashlib.sha256)
            out = self._cache[raw] = "u_" + digest.hexdigest()[:16]
        return out

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymizer:
        key = settings.ingest.pseudonym_key
        if key is not None:
            return cls(key.get_secret_value().encode())
        return cls(_installation_key(settings.home))


def _installation_key(home: Path) -> bytes:
    path = home / "pseudonym.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    # if another process created the key first, theirs is used
    create_file_once(path, secrets.token_bytes(32).hex(), mode=0o600)
    return bytes.fromhex(path.read_text().strip())
