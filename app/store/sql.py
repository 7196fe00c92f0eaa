"""SQL helpers every store module shares: bounded IN lists, portable insert-or-skip, and
which database errors are worth retrying."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# Bounded IN lists keep every statement well under the bind-parameter limits of
# SQLite (32766) and asyncpg (32767), whatever the batch size.
IN_CHUNK = 500

# SQLSTATE codes and classes worth retrying: connection loss (08), serialization
# failure and deadlock (40), out of resources (53), server shutting down or starting
# (57P), lock not available (55P03).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "55P03")

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = IN_CHUNK) -> Iterable[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same statement later can succeed (lost link, lock, deadlock)."""
    if isinstance(exc, OSError | TimeoutError | PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return True
        return isinstance(exc, InterfaceError) and "closed" in str(exc).lower()
    return False


def insert_or_skip(table: sa.Table, dialect_name: str) -> Any:
    """An INSERT that skips rows whose unique key already exists."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(
        f"the ledger supports SQLite and PostgreSQL, not {dialect_name}: "
        "set ARBITER_DATABASE_URL to a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"
    )
