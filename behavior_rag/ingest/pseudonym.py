"""Keyed pseudonyms for user ids (HMAC-SHA256), so stores and prompts never hold raw ids.

The key comes from settings, or is created once per installation under ``Settings.home`` and
reused, so the same raw id maps to the same pseudonym across runs but cannot be reversed or
recomputed without the key.

Example:
    >>> p = Pseudonymizer(b"secret")
    >>> p("12345") == p("12345"), p("12345").startswith("u_")
    (True, True)
    >>> is_anonymous(p.anonymous("session 7")), is_anonymous(p("12345"))
    (True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from behavior_rag.atomic import create_file_once
from behavior_rag.settings import Settings
from behavior_rag.types import Session

ANON_PREFIX = "anon_"
_PSEUDONYM = re.compile(r"(?:u|anon)_[0-9a-f]{16}")


def is_pseudonym(user_id: str) -> bool:
    """Whether ``user_id`` has the form this module gives (``u_`` or ``anon_`` + 16 hex)."""
    return _PSEUDONYM.fullmatch(user_id) is not None


def is_anonymous(user_id: str) -> bool:
    """Whether ``user_id`` stands for one session of a log without user ids (users unknown)."""
    return user_id.startswith(ANON_PREFIX)


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

    def anonymous(self, session_id: str) -> str:
        """The user of one session of a log without user ids: ``anon_<16 hex>``, keyed."""
        return ANON_PREFIX + self("session\x00" + session_id)[2:]

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymizer:
        key = settings.ingest.pseudonym_key
        if key is not None:
            return cls(key.get_secret_value().encode())
        return cls(_installation_key(settings.home))


class UserIds:
    """The user ids callers pass to the library, as it stores and answers them: a raw id
    becomes its keyed pseudonym, an id already in pseudonym form (from ``ingest``) is kept, so
    a lookup by either finds the same user. ``ingest.pseudonymize=false`` keeps raw ids.

    Example:
        >>> ids = UserIds(Settings(ingest={"pseudonym_key": "k"}))
        >>> ids("12345") == ids(ids("12345")), ids("12345").startswith("u_")
        (True, True)
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pseudo: Pseudonymizer | None = None  # the key file is read on first use

    def __call__(self, user_id: str) -> str:
        if not self._settings.ingest.pseudonymize or is_pseudonym(user_id):
            return user_id
        if self._pseudo is None:
            self._pseudo = Pseudonymizer.from_settings(self._settings)
        return self._pseudo(user_id)

    def many(self, user_ids: Sequence[str] | None) -> list[str] | None:
        return None if user_ids is None else [self(u) for u in user_ids]

    def session(self, s: Session) -> Session:
        """``s`` with its and its events' user ids as stored (``s`` itself when unchanged)."""
        user = self(s.user_id)
        if user == s.user_id and all(e.user_id == user for e in s.events):
            return s
        events = [e if e.user_id == user else e.model_copy(update={"user_id": self(e.user_id)})
                  for e in s.events]
        return s.model_copy(update={"user_id": user, "events": events})

    def sessions(self, sessions: Sequence[Session]) -> list[Session]:
        return [self.session(s) for s in sessions]


def split_keys(sessions: Sequence[Session]) -> dict[str, str]:
    """user id -> a key for it that every installation computes alike: the id itself unless it
    is a pseudonym, else a hash of the user's recorded events (or aggregates). Splits and
    cross-validation folds group users by it, so they do not follow the secret pseudonym key
    (which differs per installation); the key is neither needed nor revealed. Users whose
    records are identical share a key.

    Example:
        >>> from behavior_rag.synth import generate
        >>> ss = generate(20, seed=1).sessions
        >>> a = UserIds(Settings(ingest={"pseudonym_key": "a"})).sessions(ss)
        >>> b = UserIds(Settings(ingest={"pseudonym_key": "b"})).sessions(ss)
        >>> ka, kb = split_keys(a), split_keys(b)
        >>> [ka[s.user_id] for s in a] == [kb[s.user_id] for s in b]
        True
    """
    mine: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        mine[s.user_id].append(s)
    keys = {}
    for user, ss in mine.items():
        if not is_pseudonym(user):
            keys[user] = user
            continue
        h = hashlib.sha256()
        for c in sorted(session_content(s) for s in ss):
            h.update(c.encode("utf-8", "surrogatepass") + b"\n")
        keys[user] = "h:" + h.hexdigest()
    return keys


def session_content(s: Session) -> str:
    """What a session records, without its ids (which follow the pseudonym key): its events'
    times, types, items, categories, brands, prices, queries and its aggregates, as JSON."""
    ev = [[e.timestamp.isoformat(), e.type, e.item_id, e.category, e.brand, e.price, e.query]
          for e in s.events]
    return json.dumps([ev, sorted(s.aggregates.items())], default=str, ensure_ascii=False)


def _installation_key(home: Path) -> bytes:
    path = home / "pseudonym.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    # if another process created the key first, theirs is used
    create_file_once(path, secrets.token_bytes(32).hex(), mode=0o600)
    return bytes.fromhex(path.read_text().strip())


def assign_users(typed: pl.DataFrame, pseudo: Pseudonymizer | None) -> tuple[pl.DataFrame, int]:
    """Pseudonymise ``user_id`` (``pseudo`` None keeps raw ids); a row without a user id takes
    its session's user, or else one anonymous user per session. Returns the frame and the
    number of sessions with an anonymous user."""
    sid = pl.col("session_id")
    user = pl.when(sid.is_null()).then(pl.col("user_id")) \
        .otherwise(pl.col("user_id").fill_null(pl.col("user_id").max().over("session_id")))
    typed = typed.with_columns(user.alias("user_id"))
    anon = pl.col("user_id").is_null()
    anon_sids = typed.filter(anon)["session_id"].unique().to_list()
    if pseudo is None:
        fake = pl.lit(ANON_PREFIX) + sid
        real = pl.col("user_id")
    else:
        users = typed["user_id"].drop_nulls().unique().to_list()
        fake = sid.replace_strict({s: pseudo.anonymous(s) for s in anon_sids}, default=None,
                                  return_dtype=pl.Utf8)
        real = pl.col("user_id").replace_strict({u: pseudo(u) for u in users}, default=None,
                                                return_dtype=pl.Utf8)
    typed = typed.with_columns(pl.when(anon).then(fake).otherwise(real).alias("user_id"))
    return typed, len(anon_sids)
