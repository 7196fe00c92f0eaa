"""Test helpers that drive the real thing: an ``arbiter run`` process and topic readers."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from app.processes.simulate import emit
from app.settings import Settings
from app.simulator.generate import SimEvent
from connectors.broker import EmbeddedBroker

FAST_GROUP = {
    "ARBITER_KAFKA_SESSION_TIMEOUT_MS": "2000",
    "ARBITER_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
    "ARBITER_HTTP_PORT": "0",  # several processes per test: each on a free port
}


def json_log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log events a process wrote to ``path`` (other lines skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class ArbiterProcess:
    """``arbiter run`` as a real child process, configured only through its environment."""

    def __init__(self, log_path: Path, env: Mapping[str, str]) -> None:
        self.log_path = log_path
        self._env = {**os.environ, "ARBITER_LOG_FORMAT": "json", **FAST_GROUP, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ArbiterProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import main; main()", "run"],
            env=self._env,
            stdout=log,
            stderr=log,
        )
        log.close()
        return self

    def log_lines(self) -> list[dict[str, Any]]:
        return json_log_lines(self.log_path)

    async def wait_for_log(self, event: str, timeout: float = 90.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"arbiter run exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            if sum(1 for e in self.log_lines() if e.get("event") == event) > after:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no '{event}' log line in {timeout}s:\n{self.log_path.read_text()}")

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def produce(bootstrap: str, events: Sequence[SimEvent], prefix: str = "") -> None:
    await emit(bootstrap, events, topic_for=lambda t: f"{prefix}events.{t}")


async def read_topics(
    bootstrap: str,
    topics: Sequence[str],
    *,
    until: int,
    timeout: float = 90.0,
    settle: float = 1.5,
) -> dict[str, list[ConsumerRecord[bytes, bytes]]]:
    """Read every partition of ``topics`` from the beginning until ``until`` records arrived,
    then keep reading for ``settle`` seconds so that duplicates would show up too.

    Reads by explicit assignment, not a group, and never trusts end offsets (Tansu's
    ListOffsets(latest) is wrong for multi-record batches: docs/dependencies.md, Kafka).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: dict[str, list[ConsumerRecord[bytes, bytes]]] = {t: [] for t in topics}
    try:
        partitions = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            deadline = time.monotonic() + 10
            while not parts and time.monotonic() < deadline:
                await consumer.force_metadata_update()
                parts = consumer.partitions_for_topic(topic)
            partitions += [TopicPartition(topic, p) for p in sorted(parts or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            fetched = await consumer.getmany(timeout_ms=200)
            for tp, records in fetched.items():
                out[tp.topic].extend(records)
            if settle_until is None and sum(len(v) for v in out.values()) >= until:
                settle_until = time.monotonic() + settle
    finally:
        await consumer.stop()
    return out


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode()
    return None


async def wait_until(predicate: Any, timeout: float = 60.0, interval: float = 0.2) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


async def wait_decided(ledger: Any, ids: Sequence[str], timeout: float = 60.0) -> list[Any]:
    """Wait until the ledger holds a decision for every id; their ``StoredDecision``s,
    in the order of ``ids``."""
    found: dict[str, Any] = {}

    async def all_decided() -> bool:
        found.update(await ledger.find_decisions(list(ids)))
        return len(found) == len(set(ids))

    await wait_until(all_decided, timeout=timeout)
    return [found[i] for i in ids]


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting to be reaped counts as gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return text.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def tansu_children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"tansu" in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s")


def arbiter(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``arbiter <args>`` to completion and capture what it printed."""
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def service_settings(
    broker: EmbeddedBroker, models: Path, tmp_path: Path, **extra: object
) -> Settings:
    """Settings of an in-process service for tests: the broker, a SQLite ledger and a
    copy of the models under ``tmp_path``, fast group timings, no trainer."""
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path / "data",
        models_dir=models,
        batch_wait_ms=20,
        models_poll_s=0,
        trainer_enabled=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
        auto_migrate=True,
        **extra,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def admin_client(components: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service's HTTP API in this process, every request sent with an admin key."""
    from app.ops.keys import KeyStore
    from connectors.http.app import build_api

    keys = KeyStore(components.ledger.engine, cache_s=0.5, miss_refresh_s=0.0)
    _, admin = await keys.create("admin", ["admin"])
    app = build_api(components, keys, settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {admin}"},
        ) as client,
    ):
        yield client
