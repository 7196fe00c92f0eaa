"""``arbiter rules backtest``: replay the ledger through candidate rules, read-only.

The I/O shell around ``app.rules.authoring.backtest`` (the pure replay and comparison):
it opens the ledger **read-only** (SQLite opened with ``mode=ro``, PostgreSQL sessions
with ``default_transaction_read_only``), checks the schema is current, reads the decided
events page by page from the longest window before ``since`` onwards, and feeds them to
a ``Replay`` and a ``Comparison``. It never writes and never touches a topic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.errors import ConfigError
from app.rules.authoring.backtest import BacktestReport, Comparison, Replay
from app.rules.language.spec import RuleSet
from app.store import migrate
from app.store.db import check_connection, create_engine, display_url
from app.store.ledger import Ledger
from app.values import DecidedEvent


@dataclass(frozen=True)
class BacktestRequest:
    """What to replay: events with ``since <= occurred_at < until`` of ``event_types``
    (None: every type the candidate rules cover) from the ledger at ``database_url``."""

    database_url: str
    since: datetime
    until: datetime | None = None
    event_types: tuple[str, ...] | None = None
    samples: int = 3
    page: int = 5_000


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _read_only_engine(url: str) -> Any:
    """An engine on the ledger that cannot write: SQLite opened ``mode=ro`` (no WAL
    pragma, no checkpoint on close), PostgreSQL sessions read-only."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ConfigError(
                f"cannot backtest against {display_url(url)}: point ARBITER_DATABASE_URL at "
                "the ledger's SQLite file"
            )
        path = Path(database).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(
                f"no ledger at {path}: nothing to backtest — run Arbiter first, or point "
                "ARBITER_DATABASE_URL at the ledger"
            )
        return create_async_engine(
            f"sqlite+aiosqlite:///file:{path.as_posix()}?mode=ro&uri=true",
            connect_args={"uri": True},
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "asyncpg":
        return create_async_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={
                "timeout": 10,
                "server_settings": {"default_transaction_read_only": "on"},
            },
        )
    return create_engine(url)


async def _events(
    pages: AsyncIterator[list[DecidedEvent]], until: datetime | None
) -> AsyncIterator[list[DecidedEvent]]:
    async for page in pages:
        if until is not None and page and page[-1].occurred_at >= until:
            kept = [e for e in page if e.occurred_at < until]
            if kept:
                yield kept
            return
        yield page


async def run_backtest(
    request: BacktestRequest,
    rulesets: Mapping[str, RuleSet],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> BacktestReport:
    """Replay the ledger through ``rulesets`` (already checked) and compare. Reads only.

    Raises ``ConfigError`` when the ledger cannot be read (missing file, unreachable
    server, schema not migrated). ``on_progress(n)`` gets the count of compared events.
    """
    since = _aware(request.since)
    until = _aware(request.until) if request.until is not None else None
    if until is not None and until <= since:
        raise ConfigError(f"--until ({until.isoformat()}) must be after --since ({since})")
    wanted = set(request.event_types) if request.event_types is not None else set(rulesets)
    engine = _read_only_engine(request.database_url)
    replay: Replay | None = None
    try:
        await check_connection(engine, request.database_url)
        await migrate.require_current(engine)
        replay = Replay(rulesets)
        comparison = Comparison(samples=request.samples)
        seeded = skipped = compared = 0
        start = since - replay.horizon
        ledger = Ledger(engine)
        async for page in _events(ledger.decided_events(start, page=request.page), until):
            before = [e for e in page if e.occurred_at < since]
            if before:
                seeded += replay.seed(before)
            current = [e for e in page if e.occurred_at >= since]
            if not current:
                continue
            results = replay.decide(current)
            pairs = [
                (e, r)
                for e, r in zip(current, results, strict=True)
                if r is not None and e.event_type in wanted
            ]
            skipped += len(current) - len(pairs)
            comparison.add([e for e, _ in pairs], [r for _, r in pairs])
            compared += len(pairs)
            if on_progress is not None:
                on_progress(compared)
        return comparison.report(
            since=since,
            until=until,
            seeded=seeded,
            skipped=skipped,
            candidate_versions={t: rs.version for t, rs in sorted(rulesets.items())},
        )
    finally:
        if replay is not None:
            replay.close()
        await engine.dispose()
