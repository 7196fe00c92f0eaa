"""Shared fixtures: a real Tansu broker, real SQLite files, a real PostgreSQL database,
and models trained once per test session."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from connectors.broker import EmbeddedBroker

PG_ADMIN_DSN = os.environ.get("ARBITER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh Tansu broker per test: memory storage, so every test starts with no topics."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first-start-up models, trained once and shared (read-only) by every test."""
    from app.inference.models import load_or_train

    models_dir = tmp_path_factory.mktemp("models")
    load_or_train(models_dir)
    return models_dir


def _pg_admin(sql: str) -> None:
    """Run one admin statement on its own loop in a worker thread, so sync and async
    fixtures alike can call it."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result(timeout=30)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"arbiter_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        _pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'arbiter.db'}"
