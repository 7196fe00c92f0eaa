"""Engines for the ledger: SQLite (embedded default) or PostgreSQL (production).

The rest of the store takes an ``AsyncEngine`` and never looks at the URL again, so
choosing a backend is configuration only. This module also turns "the database is not
there" into a ``ConfigError`` that an operator can act on at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.errors import ConfigError

# Connection-time settings for SQLite. WAL lets readers run beside the one writer;
# NORMAL is durable across application crashes in WAL mode (only an OS crash can lose
# the last commits) and is several times faster than FULL; the busy timeout makes a
# second writer wait for the lock instead of failing at once.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)

# PostgreSQL pool: a consumer process writes one batch at a time, so a small pool is
# plenty; recycling guards against proxies that cut idle connections.
_PG_POOL = {"pool_size": 5, "max_overflow": 5, "pool_recycle": 1800, "pool_timeout": 30}
# Fail a connection attempt to an unreachable host in seconds, not asyncpg's 60.
_PG_CONNECT_TIMEOUT_S = 10


def create_engine(url: str) -> AsyncEngine:
    """Build the async engine for ``url`` with the settings the ledger relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _ensure_sqlite_folder(parsed)
        engine = create_async_engine(parsed, pool_pre_ping=True)
        event.listen(engine.sync_engine, "connect", _apply_sqlite_pragmas)
        return engine
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql":
        kwargs.update(_PG_POOL)
        if parsed.get_driver_name() == "asyncpg":
            kwargs["connect_args"] = {"timeout": _PG_CONNECT_TIMEOUT_S}
    return create_async_engine(parsed, **kwargs)


def _ensure_sqlite_folder(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _apply_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def display_url(url: str | URL) -> str:
    """The URL as it may appear in logs and errors: never with the password."""
    parsed = make_url(url)
    # URL.set(password=None) means "leave unchanged"; the NamedTuple replace clears it.
    shown = parsed._replace(password=None).render_as_string(hide_password=False)
    if parsed.password:
        shown += " (password hidden)"
    return shown


async def check_connection(engine: AsyncEngine, url: str) -> None:
    """Run one trivial query; raise ``ConfigError`` naming the database if it fails."""
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.select(1))
    except (OSError, TimeoutError, SQLAlchemyError) as exc:
        raise ConfigError(
            f"cannot reach the database at {display_url(url)}: {describe_cause(exc, url)}. "
            "Start it, or set ARBITER_DATABASE_URL to a reachable database."
        ) from exc


def describe_cause(exc: BaseException, url: str | URL | None = None) -> str:
    """One line saying what the driver reported, without SQLAlchemy's boilerplate.

    If the driver echoed the password back (some do in connection strings), it is
    masked here so that it cannot reach a log.
    """
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    text = text or type(cause).__name__
    password = make_url(url).password if url is not None else None
    if password:
        text = text.replace(str(password), "***")
    return text
