"""``arbiter run`` under orchestration: SIGTERM drains within ARBITER_SHUTDOWN_GRACE_S.

Real processes, a real Tansu broker, a real SQLite ledger shared by every process of a
test, a real HTTP webhook receiver. What ``test_e2e_kafka`` already proves (a restart
after SIGTERM loses nothing and decides nothing twice) is not repeated; these add the
order of the drain (/readyz 503 first, /healthz up to the end), the webhooks in flight,
the grace as a bound with its exit status, the consumer group handing over at once, and
the watchdog that ends a shutdown which cannot even be cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.processes.shutdown import EXIT_GRACE_OVERRUN, FORCE_EXIT_AFTER_S
from app.processes.simulate import emit
from app.simulator.generate import SimEvent, generate
from app.store import create_engine
from app.store.ledger import Ledger
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, produce, read_topics, wait_decided, wait_until
from tests.webhook_receiver import Receiver, serve

ROOT = Path(__file__).resolve().parents[1]
SECRET = "graceful-test-secret-of-32-chars"
HOOK = "audit"

CONNECTORS = """\
webhooks:
  audit:
    url: ${GRACEFUL_HOOK_URL}
    secret: ${GRACEFUL_HOOK_SECRET}
    timeout_s: %(timeout_s)s
    max_attempts: 10
    on:
      types: [transaction]
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with contextlib.contextmanager(serve)() as r:
        yield r


def _env(
    broker: EmbeddedBroker,
    models: Path,
    tmp_path: Path,
    receiver: Receiver | None = None,
    *,
    hook_timeout_s: float = 30,
    **extra: str,
) -> dict[str, str]:
    """One `arbiter run` of a test: the broker, the shared ledger, the trainer off, every
    transaction decision owed to the ``audit`` webhook (when a receiver is given)."""
    env = {
        "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        "ARBITER_MODELS_DIR": str(models),
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_DATABASE_AUTO_MIGRATE": "true",
        "ARBITER_HTTP_AUTH": "false",
        "ARBITER_TRAINER_ENABLED": "false",
        "ARBITER_BATCH_WAIT_MS": "20",
        "ARBITER_WEBHOOKS_POLL_S": "0.2",
        **extra,
    }
    if receiver is not None:
        connectors = tmp_path / "connectors.yaml"
        connectors.write_text(CONNECTORS % {"timeout_s": hook_timeout_s})
        env |= {
            "ARBITER_CONNECTORS_FILE": str(connectors),
            "GRACEFUL_HOOK_URL": receiver.url(HOOK),
            "GRACEFUL_HOOK_SECRET": SECRET,
        }
    return env


def _transactions(n: int, seed: int) -> list[SimEvent]:
    found = [
        e
        for e in generate(n * 3, seed=seed, malformed_rate=0.0, mix={"transaction": 1.0})
        if e.event_id
    ]
    return found[:n]


async def _port(service: ArbiterProcess) -> int:
    await service.wait_for_log("http api listening", timeout=120)
    return int(next(e["port"] for e in service.log_lines() if e["event"] == "http api listening"))


def _events(service: ArbiterProcess) -> list[str]:
    return [str(e.get("event")) for e in service.log_lines()]


def _sigterm(service: ArbiterProcess) -> float:
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    return time.monotonic()


async def _exit_code(service: ArbiterProcess, timeout: float) -> int:
    assert service.proc is not None
    return await asyncio.to_thread(service.proc.wait, timeout)


async def _decided(tmp_path: Path, events: list[SimEvent], timeout: float = 90) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        await wait_decided(Ledger(engine), [e.event_id or "" for e in events], timeout=timeout)
    finally:
        await engine.dispose()


async def _first_round(receiver: Receiver) -> set[str]:
    """The keys of the relay's first round, held open by the receiver (at most the
    round's size of 4; the relay claims nothing more while it waits)."""
    await wait_until(lambda: receiver.on(HOOK), timeout=30)
    await asyncio.sleep(0.5)  # the rest of the round arrives together
    keys = receiver.keys()
    assert 1 <= len(keys) <= 4, keys
    return keys


def _deliveries(tmp_path: Path) -> list[tuple[str, str, str | None]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.db")) as db:
        return db.execute("SELECT event_id, status, claimed_by FROM deliveries").fetchall()


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigterm_turns_readyz_503_first_keeps_healthz_up_and_finishes_webhooks_in_flight(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path, receiver: Receiver
) -> None:
    """12 decisions owe a webhook; the receiver holds the relay's first round (up to 4)
    open.
    On SIGTERM: /readyz answers 503 ("draining") at once while /healthz stays 200 and the
    process waits for the deliveries in flight; once the receiver answers, the process
    exits 0 well within the grace, having sent no new round. The log shows the order:
    draining before the consumer stopped, the consumer before the end. A restart sends
    the rest: every delivery arrives exactly once, nothing lost, nothing repeated."""
    receiver.released.clear()  # requests arrive and are recorded, answered on release
    env = _env(
        broker,
        trained_models,
        tmp_path,
        receiver,
        ARBITER_WEBHOOKS_BATCH="4",
        ARBITER_SHUTDOWN_GRACE_S="20",
    )
    service = ArbiterProcess(tmp_path / "first.log", env).start()
    events = _transactions(12, seed=611)
    try:
        base = f"http://127.0.0.1:{await _port(service)}"
        await service.wait_for_log("consuming", timeout=60)
        await produce(broker.bootstrap, events)
        await _decided(tmp_path, events)
        in_flight = await _first_round(receiver)

        sent = _sigterm(service)
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:

            async def draining() -> bool:
                return (await client.get("/readyz")).status_code == 503

            await wait_until(draining, timeout=5, interval=0.05)
            ready = (await client.get("/readyz")).json()
            assert ready["checks"]["accepting"] == "draining (shutting down)", ready
            for _ in range(10):  # the whole time the relay waits on its receiver
                assert (await client.get("/healthz")).status_code == 200
                await asyncio.sleep(0.1)
        assert service.proc is not None
        assert service.proc.poll() is None, "it must wait for the deliveries in flight"
        receiver.released.set()
        code = await _exit_code(service, 30)
        took = time.monotonic() - sent
    finally:
        receiver.released.set()
        service.ensure_stopped()
    assert code == 0, service.log_path.read_text()
    assert took < 20, took
    order = _events(service)
    draining_at = next(i for i, e in enumerate(order) if e.startswith("shutdown requested"))
    stopped_at = order.index("consumer stopped: batch in hand committed, group left")
    assert draining_at < stopped_at < order.index("stopped cleanly")
    assert receiver.keys() == in_flight, "no new round after SIGTERM"
    statuses = Counter(status for _, status, _ in _deliveries(tmp_path))
    assert statuses == {"delivered": len(in_flight), "pending": len(events) - len(in_flight)}

    again = ArbiterProcess(tmp_path / "second.log", env).start()
    try:
        await wait_until(lambda: len(receiver.keys()) == len(events), timeout=90)
        assert await _exit_code_after_sigterm(again) == 0
    finally:
        again.ensure_stopped()
    sent_keys = Counter(r.key for r in receiver.on(HOOK))
    assert set(sent_keys) == {f"{e.event_id}:{HOOK}" for e in events}
    assert max(sent_keys.values()) == 1, sent_keys


async def _exit_code_after_sigterm(service: ArbiterProcess) -> int:
    _sigterm(service)
    return await _exit_code(service, 60)


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_relay_stuck_on_a_silent_receiver_is_cut_off_at_the_grace_and_exits_3(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path, receiver: Receiver
) -> None:
    """The receiver never answers and the endpoint's timeout (60 s) outlasts the grace
    (5 s): the process does not hang. At the grace it names the relay in an error line,
    cuts it off, and exits with status 3 within grace + 3 s; the deliveries in flight are
    handed back (no row stays claimed), so a restart sends them at once, long before the
    relay's 600 s lease would have let them go."""
    receiver.released.clear()
    env = _env(
        broker,
        trained_models,
        tmp_path,
        receiver,
        hook_timeout_s=60,
        ARBITER_WEBHOOKS_BATCH="4",
        ARBITER_WEBHOOKS_LEASE_S="600",
        ARBITER_SHUTDOWN_GRACE_S="5",
    )
    service = ArbiterProcess(tmp_path / "first.log", env).start()
    events = _transactions(8, seed=612)
    try:
        await service.wait_for_log("consuming", timeout=120)
        await produce(broker.bootstrap, events)
        await _decided(tmp_path, events)
        await _first_round(receiver)
        sent = _sigterm(service)
        code = await _exit_code(service, 30)
        took = time.monotonic() - sent
    finally:
        service.ensure_stopped()
    log = service.log_path.read_text()
    assert code == EXIT_GRACE_OVERRUN == 3, log
    assert 4.0 <= took <= 5 + 3.5, took
    lines = service.log_lines()
    cut = [e for e in lines if e.get("event", "").startswith("did not stop within the shutdown")]
    assert [e["task"] for e in cut] == ["arbiter-relay"], log
    (last,) = [e for e in lines if e.get("event") == "stopped after the shutdown grace period"]
    assert last["cut_off"] == ["arbiter-relay"]
    assert last["status"] == 3
    assert "stopped cleanly" not in _events(service)
    assert "consumer stopped: batch in hand committed, group left" in _events(service)
    rows = _deliveries(tmp_path)
    assert len(rows) == len(events)
    assert all(status == "pending" and holder is None for _, status, holder in rows), rows

    receiver.released.set()  # from now on it answers at once
    again = ArbiterProcess(tmp_path / "second.log", env).start()
    try:
        await wait_until(
            lambda: receiver.keys() == {f"{e.event_id}:{HOOK}" for e in events}, timeout=60
        )
        await wait_until(
            lambda: all(status == "delivered" for _, status, _ in _deliveries(tmp_path)),
            timeout=30,
        )
        assert await _exit_code_after_sigterm(again) == 0
    finally:
        again.ensure_stopped()


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_stopping_member_leaves_the_group_and_the_other_takes_over_at_once(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """Two members of one group (session timeout 20 s) share a stream. SIGTERM to one
    mid-stream: it exits 0 within seconds, and because it committed its batch in hand
    and left the group, the other member has decided everything that was on its
    partitions before the 20 s a silent member's partitions would wait for its session
    to run out (Tansu then needs about half as long again to rebalance) — and reads none
    of it twice (no redelivery): every event has exactly one decision, in the ledger and
    on the topic."""
    session_s = 20
    group = {
        "ARBITER_KAFKA_SESSION_TIMEOUT_MS": str(session_s * 1000),
        "ARBITER_WEBHOOKS_ENABLED": "false",
    }
    first = ArbiterProcess(tmp_path / "a.log", _env(broker, trained_models, tmp_path, **group))
    second = ArbiterProcess(tmp_path / "b.log", _env(broker, trained_models, tmp_path, **group))
    stream = list(generate(2000, seed=613, malformed_rate=0.0))
    probes = list(generate(200, seed=614, malformed_rate=0.0))
    try:
        # The first member joins alone, then the second: each decides before going on,
        # so the group has settled (Tansu was once seen to ignore a LeaveGroup that came
        # right after two members' first join round completed).
        warm: list[SimEvent] = []
        for member in (first, second):
            member.start()
            await member.wait_for_log("consuming", timeout=120)
            for _ in range(60):
                batch = list(generate(100, seed=620 + len(warm), malformed_rate=0.0))[:50]
                warm += batch
                await produce(broker.bootstrap, batch)
                await asyncio.sleep(1)
                if _decided_by(member):
                    break
        await _decided(tmp_path, warm)
        await asyncio.sleep(2)

        producing = asyncio.create_task(
            emit(broker.bootstrap, stream, topic_for=lambda t: f"events.{t}", rate=1500)
        )
        before = _decided_by(first)
        await wait_until(lambda: _decided_by(first) >= before + 200, timeout=60)
        _sigterm(first)
        assert await _exit_code(first, 30) == 0, first.log_path.read_text()
        left = time.monotonic()
        await producing
        await produce(broker.bootstrap, probes)
        await _decided(tmp_path, [*stream, *probes], timeout=60)
        took_over = time.monotonic() - left
        assert await _exit_code_after_sigterm(second) == 0
    finally:
        first.ensure_stopped()
        second.ensure_stopped()
    assert took_over < session_s, f"{took_over:.1f} s: its partitions waited for its session"
    assert "consumer stopped: batch in hand committed, group left" in _events(first)
    redelivered = sum(e.get("redelivered", 0) for e in second.log_lines() if e["event"] == "batch")
    assert redelivered == 0, "the stopped member left decided events uncommitted"
    everything = [*warm, *stream, *probes]
    topics = [f"decisions.{t}" for t in ("order", "ticket", "transaction")]
    got = await read_topics(broker.bootstrap, topics, until=len(everything), timeout=60)
    ids = Counter(json.loads(r.value)["event_id"] for rs in got.values() for r in rs)
    assert set(ids) == {e.event_id for e in everything}
    assert max(ids.values()) == 1


def _decided_by(service: ArbiterProcess) -> int:
    return sum(e.get("decided", 0) for e in service.log_lines() if e.get("event") == "batch")


WEDGED = """
import asyncio, time
from app.logs import configure_logging
from app.processes.shutdown import Shutdown

configure_logging("json", "info")

async def main():
    shutdown = Shutdown(0.5)
    shutdown.begin()
    shutdown.waiting_on = "a wedged event loop"
    time.sleep(60)  # blocks the loop: no cut-off, no teardown can run

asyncio.run(main())
"""


def test_a_shutdown_that_cannot_even_be_cut_off_is_ended_by_the_watchdog_with_status_3() -> None:
    """The last resort: when the drain itself cannot run (here the event loop is blocked),
    a watchdog thread ends the process FORCE_EXIT_AFTER_S after the grace, with status 3
    and an error line naming what it was waiting on — never a hang until SIGKILL."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", WEDGED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == EXIT_GRACE_OVERRUN, done.stderr
    last = json.loads(done.stderr.strip().splitlines()[-1])
    assert last["event"] == "shutdown did not finish within the grace period; ending the process"
    assert last["waiting_on"] == "a wedged event loop"
    assert last["status"] == 3
    assert 0.5 + FORCE_EXIT_AFTER_S <= took < 30, took
