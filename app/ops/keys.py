"""What ``arbiter keys …`` does, as plain async functions over the settings' store.

Each opens the store named by the settings (checked reachable and migrated), does one
thing to the ``api_keys`` table and returns plain data for the CLI to print. A refused
request (a taken name, an unknown scope) raises ``ApiKeyError`` with the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.settings import Settings
from app.store.keys import ApiKey, KeyStore
from app.store.migrate import open_migrated


async def create_key(settings: Settings, name: str, scopes: Sequence[str]) -> tuple[ApiKey, str]:
    """Store a new key; returns it with the plain key, which is never shown again."""
    async with open_migrated(settings.resolved_database_url) as engine:
        return await KeyStore(engine).create(name, scopes)


async def list_keys(settings: Settings, *, include_revoked: bool = False) -> list[ApiKey]:
    """The active keys (revoked ones too with ``include_revoked``), oldest first."""
    async with open_migrated(settings.resolved_database_url) as engine:
        return await KeyStore(engine).list(include_revoked=include_revoked)


async def revoke_key(settings: Settings, name: str) -> ApiKey | None:
    """Revoke the active key called ``name``; None when there is none."""
    async with open_migrated(settings.resolved_database_url) as engine:
        return await KeyStore(engine).revoke(name)
