"""What ``arbiter db upgrade`` does: bring the settings' database to the head revision.

SQLite's folder is created first; the database must be reachable (``ConfigError`` naming
``ARBITER_DATABASE_URL`` otherwise). Returns the revision it is at afterwards.
"""

from __future__ import annotations

from app.settings import Settings
from app.store import migrate
from app.store.db import check_connection, create_engine


async def upgrade_database(settings: Settings) -> str | None:
    """Apply the migrations (Alembic) to ``settings``' database; its revision after."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        await check_connection(engine, url)
        await migrate.upgrade(url)
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()
