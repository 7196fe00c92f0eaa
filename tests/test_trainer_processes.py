"""The trainer as processes of its own beside a consumer, sharing one PostgreSQL store.

Two ``arbiter trainer`` processes run at once against the same database; the ``trainer``
lease lets exactly one train at a time: runs of a model never overlap, registry versions
follow each other, the other trainer says why it stands by. A consumer started with
``ARBITER_TRAINER_ENABLED=false`` serves the promoted version without a restart. A
trainer stopped mid-run (SIGTERM) hands the lease over at once and closes its run; one
killed mid-run (SIGKILL, child included) is replaced when its lease runs out, and the
survivor closes the dead run ``abandoned``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.simulator.generate import generate, labelled_events
from app.store import create_engine, upgrade
from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.store.registry import ModelRegistry
from app.store.training import TrainingRun, TrainingStore
from app.trainer.bootstrap import ensure_champions
from app.trainer.service import LEASE, STOPPED
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, json_log_lines, produce, wait_decided, wait_until
from tests.shipped import CATALOG
from tests.trainer_data import scored_by, seed

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NAME = "transaction.fraud"
FINISHED = ("promoted", "kept")


class TrainerProcess:
    """``arbiter trainer`` as a real process in a session of its own, so that killing it
    can kill its training child too (as losing the pod or the host does)."""

    def __init__(self, log_path: Path, env: dict[str, str], cwd: Path) -> None:
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TrainerProcess:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from app.cli import main; main()", "trainer"],
                env=self._env,
                cwd=self._cwd,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        return self

    @property
    def holder(self) -> str:
        """The name it holds the lease under (``Trainer``'s default: host and pid)."""
        assert self.proc is not None
        return f"{socket.gethostname()}:{self.proc.pid}"

    def lines(self) -> list[dict[str, Any]]:
        return json_log_lines(self.log_path)

    def said(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("event") == event]

    async def wait_for(self, event: str, timeout: float = 90) -> None:
        def seen() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, self.log_path.read_text()
            return bool(self.said(event))

        await wait_until(seen, timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL to the trainer and its training child at once."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill_all()


@pytest.fixture
async def store_env(pg_url: str, trained_models: Path, tmp_path: Path) -> dict[str, str]:
    """A migrated PostgreSQL store with the first models registered, and the environment
    of every process of the test (quick polls, a small search budget)."""
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    await upgrade(pg_url)
    engine = create_engine(pg_url)
    try:
        await ensure_champions(ModelRegistry(engine), models, CATALOG)
    finally:
        await engine.dispose()
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ARBITER_DATABASE_URL": pg_url,
        "ARBITER_MODELS_DIR": str(models),
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_LOG_FORMAT": "json",
        "ARBITER_TRAINER_POLL_S": "1",
        "ARBITER_TRAINER_MIN_NEW": "1000",
        "ARBITER_TRAINER_BUDGET_S": "4",
    }


def _trainers(env: dict[str, str], tmp_path: Path, *, lease_s: float) -> list[TrainerProcess]:
    env = {**env, "ARBITER_TRAINER_LEASE_S": str(lease_s)}
    return [TrainerProcess(tmp_path / f"trainer-{i}.log", env, tmp_path) for i in (1, 2)]


async def _seed_due(engine: AsyncEngine, models: Path, n: int, seed_no: int) -> None:
    """``n`` decided transactions of the changed fraud pattern with their outcomes: past
    ARBITER_TRAINER_MIN_NEW, so a run is due; the challenger learns what the champion
    never saw."""
    events, labels = labelled_events("transaction", n, seed=seed_no, drift_at=0)
    scores = scored_by(models, NAME, events)
    # One write for all n outcomes: a trainer polling every second must not start on the
    # first 1,000 and find the rest "new" (and drifting) right after.
    await seed(
        Ledger(engine), OutcomeStore(engine), events, labels, model=NAME, scores=scores, chunk=n
    )


async def _runs(engine: AsyncEngine) -> list[TrainingRun]:
    return sorted(await TrainingStore(engine).runs(NAME, limit=100), key=lambda r: r.id)


def _never_overlap(runs: list[TrainingRun]) -> None:
    for before, after in itertools.pairwise(runs):
        assert before.finished_at is not None
        assert before.finished_at <= after.started_at, (before, after)


@pytest.mark.kafka
@pytest.mark.timeout(420)
async def test_two_trainer_processes_train_one_at_a_time_and_the_consumer_serves_the_promotion(
    broker: EmbeddedBroker, store_env: dict[str, str], tmp_path: Path
) -> None:
    """A consumer (trainer off) and two `arbiter trainer` processes started together.
    1,500 labelled outcomes of a changed pattern make a run due: exactly one trainer
    trains it while the other logs that it stands by (naming the holder), v2 is promoted,
    and the consumer decides later events with v2 without a restart. 1,200 more make a
    second run due: again one run. Two runs in all, never overlapping in time, versions
    1, 2, 3 registered once each, each run's challenger the next version."""
    engine = create_engine(store_env["ARBITER_DATABASE_URL"])
    models = Path(store_env["ARBITER_MODELS_DIR"])
    consumer = ArbiterProcess(
        tmp_path / "run.log",
        {
            **store_env,
            "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "ARBITER_TRAINER_ENABLED": "false",
            "ARBITER_WEBHOOKS_ENABLED": "false",
            "ARBITER_MODELS_POLL_S": "0.5",
            "ARBITER_BATCH_WAIT_MS": "20",
        },
    ).start()
    trainers = [t.start() for t in _trainers(store_env, tmp_path, lease_s=30)]
    try:
        await consumer.wait_for_log("consuming", timeout=150)
        for t in trainers:
            await t.wait_for("trainer started")
        await _seed_due(engine, models, 1500, seed_no=701)

        async def finished(n: int) -> bool:
            runs = await _runs(engine)
            assert all(r.status in (*FINISHED, "running") for r in runs), runs
            return sum(r.status in FINISHED for r in runs) >= n

        await wait_until(lambda: finished(1), timeout=200, interval=0.5)
        (first,) = await _runs(engine)
        assert first.status == "promoted", first.reason
        assert first.challenger_version == 2

        await consumer.wait_for_log("models swapped in", timeout=30)
        later = [
            e
            for e in generate(200, seed=703, malformed_rate=0.0, mix={"transaction": 1.0})
            if e.event_id
        ][:50]
        await produce(broker.bootstrap, later)
        decided = await wait_decided(Ledger(engine), [e.event_id or "" for e in later])
        assert {d.record.model_versions[NAME] for d in decided} == {"v2"}

        await _seed_due(engine, models, 1200, seed_no=702)
        await wait_until(lambda: finished(2), timeout=200, interval=0.5)
        await asyncio.sleep(3)  # both trainers poll again: nothing is due any more
        runs = await _runs(engine)
        versions = [v.version for v in await ModelRegistry(engine).versions(NAME)]
    finally:
        for t in trainers:
            t.ensure_stopped()
        consumer.ensure_stopped()
        await engine.dispose()

    assert len(runs) == 2, runs
    assert all(r.status in FINISHED and r.trigger == "new_outcomes" for r in runs), runs
    _never_overlap(runs)
    assert versions == [1, 2, 3]
    assert [r.challenger_version for r in runs] == [2, 3]
    holders = {t.holder for t in trainers}
    assert {r.holder for r in runs} <= holders
    standing_by = [
        e for t in trainers for e in t.said("another trainer holds the lease; standing by")
    ]
    assert standing_by, "the trainer that lost the race says why it waits"
    assert {e["holder"] for e in standing_by} <= holders


async def _holder_mid_search(
    engine: AsyncEngine, trainers: list[TrainerProcess]
) -> tuple[TrainerProcess, TrainerProcess, TrainingRun]:
    """The trainer that took the run, once its child is in the model search; the other
    one; the run."""

    async def running() -> TrainingRun | None:
        runs = [r for r in await _runs(engine) if r.status == "running"]
        return runs[0] if runs else None

    await wait_until(running, timeout=120, interval=0.2)
    run = await running()
    assert run is not None
    (holder,) = [t for t in trainers if t.holder == run.holder]
    (other,) = [t for t in trainers if t is not holder]

    def searching() -> bool:
        return any("model search" in str(e.get("step", "")) for e in holder.said("training"))

    await wait_until(searching, timeout=120, interval=0.1)
    return holder, other, run


@pytest.mark.timeout(300)
async def test_a_trainer_stopped_mid_run_closes_it_and_hands_the_lease_over_at_once(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM to the trainer whose child is mid-search: it exits 0 within seconds, its
    run is closed `abandoned` (saying it was stopped) and the lease released, so the other
    trainer takes over at its next poll, not after the 60 s lease, and trains the run."""
    engine = create_engine(store_env["ARBITER_DATABASE_URL"])
    trainers = [t.start() for t in _trainers(store_env, tmp_path, lease_s=60)]
    try:
        for t in trainers:
            await t.wait_for("trainer started")
        await _seed_due(engine, Path(store_env["ARBITER_MODELS_DIR"]), 1500, seed_no=711)
        holder, other, stopped = await _holder_mid_search(engine, trainers)
        assert holder.proc is not None
        holder.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(holder.proc.wait, 30) == 0, holder.log_path.read_text()
        exited = datetime.now(UTC)
        found = await TrainingStore(engine).get(stopped.id)
        assert found is not None
        assert found.status == "abandoned"
        assert found.reason == STOPPED
        assert await TrainingStore(engine).holder(LEASE) in (None, (other.holder, ANY))

        async def trained() -> bool:
            return any(r.status in FINISHED for r in await _runs(engine))

        await wait_until(trained, timeout=200, interval=0.5)
        runs = await _runs(engine)
        versions = [v.version for v in await ModelRegistry(engine).versions(NAME)]
    finally:
        for t in trainers:
            t.ensure_stopped()
        await engine.dispose()
    assert versions == [1, 2]
    took_over = (runs[1].started_at - exited).total_seconds()
    assert took_over < 15, f"{took_over:.1f} s: the other trainer waited for the 60 s lease"
    assert not other.said("took over the trainer lease from a holder that stopped renewing it")
    assert [(r.status, r.holder) for r in runs] == [
        ("abandoned", holder.holder),
        (runs[1].status, other.holder),
    ]
    assert runs[1].status in FINISHED
    _never_overlap(runs)
    assert "trainer stopped" in holder.log_path.read_text()


@pytest.mark.timeout(300)
async def test_a_killed_trainer_is_replaced_when_its_lease_runs_out_and_its_run_abandoned(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL to the trainer (and its child) mid-search: its lease (9 s, renewed every
    3 s) runs out, the other trainer takes it, closes the dead run `abandoned` before
    its own run starts, trains, and registers v2 — the next version, nothing left over."""
    engine = create_engine(store_env["ARBITER_DATABASE_URL"])
    trainers = [t.start() for t in _trainers(store_env, tmp_path, lease_s=9)]
    try:
        for t in trainers:
            await t.wait_for("trainer started")
        await _seed_due(engine, Path(store_env["ARBITER_MODELS_DIR"]), 1500, seed_no=721)
        dead, survivor, _ = await _holder_mid_search(engine, trainers)
        lease = await TrainingStore(engine).holder(LEASE)
        assert lease is not None
        assert lease[0] == dead.holder
        dead.kill_all()

        async def trained() -> bool:
            return any(r.status in FINISHED for r in await _runs(engine))

        await wait_until(trained, timeout=200, interval=0.5)
        runs = await _runs(engine)
        versions = [v.version for v in await ModelRegistry(engine).versions(NAME)]
    finally:
        for t in trainers:
            t.ensure_stopped()
        await engine.dispose()
    assert [(r.status, r.holder) for r in runs] == [
        ("abandoned", dead.holder),
        (runs[1].status, survivor.holder),
    ], runs
    assert runs[1].status in FINISHED
    _never_overlap(runs)
    # Not before the dead holder's lease ran out (its last renewal, plus 9 s).
    assert runs[1].started_at >= lease[1], (runs[1].started_at, lease[1])
    assert versions == [1, 2]
    assert runs[1].challenger_version == 2
    (taken,) = survivor.said("took over the trainer lease from a holder that stopped renewing it")
    assert taken["previous"] == dead.holder
