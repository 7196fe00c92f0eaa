"""Alembic environment for the Arbiter store.

Two ways in:

- ``app.store.migrate`` (``arbiter db upgrade``, auto-migrate at start-up) opens the
  async engine itself and hands over a sync connection through
  ``config.attributes["connection"]`` via ``AsyncConnection.run_sync``, so migrations
  run inside an already running event loop.
- The plain ``alembic`` command (development) has no connection: this file builds the
  engine from ``config.attributes["url"]``, the ``sqlalchemy.url`` option or
  ``ARBITER_DATABASE_URL`` and runs the same code under ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from app.store.db import create_engine
from app.store.tables import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("ARBITER_DATABASE_URL")
    )
    if not url:
        raise RuntimeError(
            "no database URL for migrations: set ARBITER_DATABASE_URL or run `arbiter db upgrade`"
        )
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_with_own_engine())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
