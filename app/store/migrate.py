"""Schema migrations of the store, driven from Python (Alembic under the hood).

``arbiter db upgrade`` and ``ARBITER_DATABASE_AUTO_MIGRATE=true`` call ``upgrade``; every other
start-up calls ``require_current`` and refuses to run against a schema it does not
match, rather than failing on the first insert at 3 a.m. The scripts live in the
``migrations`` package, found through importlib so that an installed wheel migrates
the same way as a checkout.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ConfigError
from app.store.db import create_engine

# Any constant will do: it only has to be the same in every Arbiter process, so that
# consumers starting together with auto-migrate apply the migrations one at a time.
_PG_MIGRATION_LOCK = 0x4172626974657201


def script_location() -> Path:
    """The folder of the ``migrations`` package (Alembic's script location)."""
    folder = importlib.resources.files("migrations")
    if not isinstance(folder, Path):
        raise ConfigError(
            f"the migrations package at {folder} is not a folder on disk (zipped install?): "
            "install Arbiter as a regular wheel or from a checkout"
        )
    return folder


def alembic_config() -> Config:
    """An Alembic config without an ini file, pointing at the packaged migrations."""
    config = Config()
    # ConfigParser interpolation treats "%" specially, and paths may contain it.
    config.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision this Arbiter ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigError(f"no migrations found in {script_location()}: the install is broken")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; ``None`` for an empty (never migrated) database."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision_sync)


def _current_revision_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(url: str) -> None:
    """Apply every pending migration to the database at ``url`` (``alembic upgrade head``).

    Alembic is synchronous; ``run_sync`` runs it on the async engine's connection, so
    this works from inside a running event loop.
    """
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            await conn.run_sync(_upgrade_sync, alembic_config())
    finally:
        await engine.dispose()


def _upgrade_sync(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def require_current(engine: AsyncEngine) -> None:
    """Refuse to start unless the database schema is exactly at this Arbiter's head."""
    head = head_revision()
    current = await current_revision(engine)
    if current == head:
        return
    if current is not None and not _is_known(current):
        raise ConfigError(
            f"database schema is at {current}, which this Arbiter (head {head}) does not "
            "know: a newer Arbiter migrated it. Run that version, or point "
            "ARBITER_DATABASE_URL at a database of this version."
        )
    raise ConfigError(
        f"database schema is at {current or 'empty'}, this Arbiter needs {head}: "
        "run `arbiter db upgrade` (or set ARBITER_DATABASE_AUTO_MIGRATE=true)"
    )


def _is_known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


@contextlib.asynccontextmanager
async def open_migrated(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the store at ``url``, checked to be reachable and at this Arbiter's
    schema (what every admin command opens), disposed on exit."""
    from app.store.db import check_connection, create_engine

    engine = create_engine(url)
    try:
        await check_connection(engine, url)
        await require_current(engine)
        yield engine
    finally:
        await engine.dispose()
