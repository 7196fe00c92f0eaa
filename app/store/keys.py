"""API keys: created and revoked by `arbiter keys`, checked on every HTTP API request.

A key is ``arb_<prefix>_<secret>``: 8 random lower-case characters that find the row and
name the key in listings, then 32 random bytes (URL-safe base64). Only the SHA-256 of
the whole key is stored. A fast hash is the right one here: a slow password hash
(scrypt, argon2) protects *guessable* secrets, and 256 random bits are not guessable,
while tens of milliseconds of scrypt per request would let anyone with a made-up key
burn the API's CPU. The presented hash is compared with ``hmac.compare_digest``.

``KeyStore.authenticate`` serves from an in-memory snapshot of the active keys,
reloaded when older than ``cache_s`` (so a revocation takes effect within that time) and
at most once a second on an unknown prefix (so a new key works at once, and a flood of
made-up keys cannot hammer the database). ``last_used_at`` is written on those reloads,
not per request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ArbiterError
from app.store.tables import api_keys

SCOPES: tuple[str, ...] = (
    "events:write",
    "decide",
    "outcomes:write",
    "decisions:read",
    "dashboard:read",
    "admin",
)
ADMIN = "admin"  # implies every other scope
KEY_PREFIX_CHARS = 8
_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(r"arb_([a-z0-9]{8})_([A-Za-z0-9_-]{43})")  # used with fullmatch
_PREFIX_RE = re.compile(r"[a-z0-9]{8}")  # used with fullmatch
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ApiKeyError(ArbiterError):
    """A key cannot be created or revoked as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ApiKey:
    """What is known about one key (never the key itself)."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes


# --- pure helpers -------------------------------------------------------------------


def new_key() -> tuple[str, str]:
    """A fresh ``(prefix, key)``; the key is shown once and never stored."""
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(KEY_PREFIX_CHARS))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return prefix, f"arb_{prefix}_{secret}"


def key_prefix(presented: str) -> str | None:
    """The prefix of a well-formed key, or None for anything else."""
    match = _KEY_RE.fullmatch(presented)
    return match.group(1) if match else None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes, checked; raises naming the unknown ones and the known ones."""
    wanted = frozenset(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ApiKeyError(
            f"unknown scope(s) {', '.join(unknown)}; known scopes are {', '.join(SCOPES)}"
        )
    if not wanted:
        raise ApiKeyError(f"give the key at least one --scope ({', '.join(SCOPES)})")
    return wanted


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ApiKeyError(
            f"key name {name[:80]!r} is not usable: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _from_row(row: sa.RowMapping) -> tuple[ApiKey, str]:
    key = ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=frozenset(row["scopes"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
    return key, row["hash"]


# --- I/O shell ----------------------------------------------------------------------


class KeyStore:
    """Creates, lists, revokes and checks API keys in the ``api_keys`` table."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_s: float = 5.0,
        miss_refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._cache_s = cache_s
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._snapshot: dict[str, tuple[ApiKey, str]] = {}
        self._loaded_at: float | None = None
        self._used: dict[int, datetime] = {}
        self._lock = asyncio.Lock()

    async def create(
        self, name: str, scopes: Sequence[str], now: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it with the plain key, which is never shown again."""
        checked = check_scopes(scopes)
        check_name(name)
        prefix, key = new_key()
        created = now or datetime.now(UTC)
        async with self._engine.begin() as conn:
            taken = await conn.execute(
                sa.select(api_keys.c.id)
                .where(api_keys.c.name == name)
                .where(api_keys.c.revoked_at.is_(None))
            )
            if taken.first() is not None:
                raise ApiKeyError(
                    f"an active key called {name!r} exists: revoke it first "
                    f"(arbiter keys revoke {name}) or pick another name"
                )
            result = await conn.execute(
                sa.insert(api_keys).values(
                    name=name,
                    prefix=prefix,
                    hash=hash_key(key),
                    scopes=sorted(checked),
                    created_at=created,
                )
            )
            key_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        return ApiKey(key_id, name, prefix, checked, created), key

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(row)[0] for row in rows]

    async def revoke(self, name: str, now: datetime | None = None) -> ApiKey | None:
        """Revoke the active key called ``name``; None when there is none."""
        at = now or datetime.now(UTC)
        async with self._engine.begin() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(api_keys)
                        .where(api_keys.c.name == name)
                        .where(api_keys.c.revoked_at.is_(None))
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            await conn.execute(
                sa.update(api_keys).where(api_keys.c.id == row["id"]).values(revoked_at=at)
            )
        self._snapshot.pop(row["prefix"], None)
        key, _ = _from_row(row)
        return ApiKey(key.id, key.name, key.prefix, key.scopes, key.created_at, at)

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None (malformed, unknown or revoked alike)."""
        prefix = key_prefix(presented)
        if prefix is None:
            return None
        found = await self._active(prefix)
        if found is None:
            return None
        key, stored_hash = found
        if not hmac.compare_digest(stored_hash, hash_key(presented)):
            return None
        self._used[key.id] = datetime.now(UTC)
        return key

    async def by_prefix(self, prefix: str) -> tuple[ApiKey, str] | None:
        """The active key with ``prefix`` and its stored hash (the secret its signed report
        links are keyed with), or None; from the same snapshot as ``authenticate``, so a
        revocation reaches it within ``cache_s``. Counts as a use of the key."""
        if _PREFIX_RE.fullmatch(prefix) is None:
            return None
        found = await self._active(prefix)
        if found is not None:
            self._used[found[0].id] = datetime.now(UTC)
        return found

    async def _active(self, prefix: str) -> tuple[ApiKey, str] | None:
        now = self._clock()
        age = None if self._loaded_at is None else now - self._loaded_at
        if (
            age is None
            or age >= self._cache_s
            or (prefix not in self._snapshot and age >= self._miss_refresh_s)
        ):
            await self._reload(now)
        return self._snapshot.get(prefix)

    async def _reload(self, at: float) -> None:
        async with self._lock:
            if self._loaded_at is not None and self._loaded_at >= at:
                return  # another request reloaded while this one waited
            used, self._used = self._used, {}
            async with self._engine.begin() as conn:
                if used:
                    await conn.execute(
                        sa.update(api_keys)
                        .where(api_keys.c.id == sa.bindparam("key_id"))
                        .values(last_used_at=sa.bindparam("used_at")),
                        [{"key_id": k, "used_at": t} for k, t in used.items()],
                    )
                rows = (
                    (await conn.execute(sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))))
                    .mappings()
                    .all()
                )
            self._snapshot = {row["prefix"]: _from_row(row) for row in rows}
            self._loaded_at = self._clock()
