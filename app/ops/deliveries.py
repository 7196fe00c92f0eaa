"""What ``arbiter deliveries …`` does, as plain async functions over the settings' store.

Each opens the store named by the settings (checked reachable and migrated), does one
thing and returns plain data for the CLI to print.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from app.errors import ConfigError
from app.settings import Settings
from app.store.migrate import open_migrated
from app.store.outbox import Delivery, OutboxStore


async def list_deliveries(
    settings: Settings, *, failed: bool = False, endpoint: str | None = None, limit: int = 50
) -> list[Delivery]:
    """The newest deliveries (only dead-lettered ones with ``failed``), newest first."""
    async with open_migrated(settings.resolved_database_url) as engine:
        return await OutboxStore(engine).recent(
            status="failed" if failed else None, endpoint=endpoint, limit=limit
        )


async def retry_deliveries(
    settings: Settings, ids: Sequence[int], *, all_failed: bool = False
) -> int:
    """Put deliveries back to pending (attempts reset, due now) for the running relay to
    send; returns how many. ``ConfigError`` when nothing is named or an id is unknown."""
    if not ids and not all_failed:
        raise ConfigError(
            "name the deliveries to retry (ids from `arbiter deliveries list --failed`) "
            "or pass --all-failed"
        )
    async with open_migrated(settings.resolved_database_url) as engine:
        changed, missing = await OutboxStore(engine).retry(
            datetime.now(UTC), ids, all_failed=all_failed
        )
    if missing:
        raise ConfigError(
            f"no delivery with id {', '.join(map(str, missing))}: nothing was changed; see "
            "`arbiter deliveries list` for the ids"
        )
    return changed
