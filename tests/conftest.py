"""Shared fixtures: a real Tansu broker, real SQLite files, a real PostgreSQL database,
and the first models, trained once (outside every test's timeout) and cached on disk."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.errors import ConfigError
from app.store import Ledger, create_engine, upgrade
from connectors.broker import EmbeddedBroker
from tests import first_models

PG_ADMIN_DSN = os.environ.get("ARBITER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh Tansu broker per test: memory storage, so every test starts with no topics.

    Its port is picked free and then bound by Tansu: with tests running in parallel
    another process may take it in between, so a broker that cannot start gets a new
    port, twice."""
    for attempt in range(3):
        b = EmbeddedBroker()
        try:
            b.start()
        except ConfigError:
            if attempt == 2:
                raise
            continue
        try:
            yield b
        finally:
            b.stop()
        return


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, OpenMP and BLAS (torch, numpy, scikit-learn) get one
    thread, in this process and those it starts: the workers and their child processes
    outnumber the cores, and the extra threads only spin (measured: 1.5x the CPU time
    for the text model tests beside two busy loops). The service sets its own."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


# --- the first models: built once, outside every test's timeout ---------------------

_MODELS = pytest.StashKey["Path | str"]()  # the cached models folder, or why there is none
_BUILDER = pytest.StashKey["subprocess.Popen[bytes]"]()


def _needs_models(item: pytest.Item) -> bool:
    return "trained_models" in getattr(item, "fixturenames", ())


def _heavy(item: pytest.Item) -> bool:
    """Marked slow, or given more than the default timeout."""
    timeout = item.get_closest_marker("timeout")
    default = float(item.config.getini("timeout") or 0)
    return item.get_closest_marker("slow") is not None or (
        timeout is not None and bool(timeout.args) and float(timeout.args[0]) > default
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the run, whole modules at a time (module fixtures stay set up once): modules
    with heavy tests first, so that parallel workers do not end on one long test; while
    the first models are being built, modules that do not need them go first.

    Then start building the first models (a process of its own) when a collected test
    needs them and no cached build holds: the tests that do not need them run meanwhile.
    """
    needed = any(_needs_models(i) for i in items)
    cached = not needed or first_models.find() is not None
    modules: dict[Path, tuple[bool, bool]] = {}
    for item in items:
        models, heavy = modules.get(item.path, (False, False))
        modules[item.path] = (models or _needs_models(item), heavy or _heavy(item))

    def order(item: pytest.Item) -> tuple[bool, bool]:
        models, heavy = modules[item.path]
        return (models and not cached, not heavy)

    items.sort(key=order)  # stable: the collection order within each module and rank
    if cached or config.option.collectonly:
        return
    first_models.CACHE.mkdir(parents=True, exist_ok=True)
    with (first_models.CACHE / f"build-{os.getpid()}.log").open("wb") as log:
        config.stash[_BUILDER] = subprocess.Popen(
            first_models.command(),
            cwd=first_models.ROOT,
            env=first_models.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _first_models(config: pytest.Config) -> Path | str:
    """Wait for the build started at collection (or run one now); the folder, or what
    went wrong."""
    if _MODELS in config.stash:
        return config.stash[_MODELS]
    builder = config.stash.get(_BUILDER, None)
    found: Path | str | None = None
    if builder is not None:
        log = first_models.CACHE / f"build-{os.getpid()}.log"
        if builder.wait() != 0:
            found = f"building the first models failed:\n{log.read_text()[-5000:]}"
        log.unlink(missing_ok=True)
    if found is None:
        found = first_models.find()
    if found is None:
        done = subprocess.run(
            first_models.command(),
            cwd=first_models.ROOT,
            env=first_models.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            found = Path(lines[-1])
        else:
            found = f"building the first models failed:\n{(done.stdout + done.stderr)[-5000:]}"
    config.stash[_MODELS] = found
    return found


def pytest_unconfigure(config: pytest.Config) -> None:
    """A run that ends before any test awaited the build (``-x``, Ctrl-C) stops it: no
    process outlives the run (the half-built folder is cleared by the next build)."""
    builder = config.stash.get(_BUILDER, None)
    if builder is not None and builder.poll() is None:
        builder.terminate()
        try:
            builder.wait(10)
        except subprocess.TimeoutExpired:
            builder.kill()
            builder.wait(10)
    (first_models.CACHE / f"build-{os.getpid()}.log").unlink(missing_ok=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Before the timeout of a test that needs the first models starts (pytest-timeout
    starts it inside this wrapper), wait until they are built: on a busy machine the
    build takes minutes, which must make the run slower, not the test red."""
    if _needs_models(item):
        _first_models(item.config)
    return (yield)


@pytest.fixture(scope="session")
def trained_models(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The first-start-up models (see ``tests/first_models.py``): a copy of the cached
    build, shared (read-only) by every test of this session."""
    found = _first_models(request.config)
    if isinstance(found, str):
        pytest.fail(found, pytrace=False)
    models_dir = tmp_path_factory.mktemp("models")
    shutil.copytree(found, models_dir, dirs_exist_ok=True)
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
