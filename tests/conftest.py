"""Shared fixtures: a real Tansu broker, real SQLite files, a real PostgreSQL database,
and models trained once per test session."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.store import Ledger, create_engine, upgrade
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
    from app.inference.catalog import MODELS
    from app.trainer.jobs.first import train_first

    models_dir = tmp_path_factory.mktemp("models")
    train_first(models_dir, list(MODELS), on_progress=lambda _msg: None)
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


# --- migrated databases on both backends (parametrized) -------------------------

PG_ADMIN_URL = os.environ.get(
    "ARBITER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def _admin_engine() -> AsyncEngine:
    return create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)


async def _drop_pg_database(name: str) -> None:
    admin = await _admin_engine()
    try:
        async with admin.connect() as conn:
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        await admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """URL of a fresh, never migrated database: a SQLite file or a new PostgreSQL db."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'arbiter.db'}"
        return
    name = f"arbiter_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin_engine()
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await _drop_pg_database(name)


@pytest.fixture
async def db_url(empty_db_url: str) -> str:
    """URL of a fresh database migrated to head."""
    await upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def ledger(engine: AsyncEngine) -> Ledger:
    return Ledger(engine)
