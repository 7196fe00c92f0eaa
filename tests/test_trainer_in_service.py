"""The loop closed for real: simulator → ``arbiter run`` (its own process, real broker,
real SQLite) → outcomes → the background trainer retrains on its own → promotion → new
decisions carry the new version. The simulator plants drift early, so the retrained
model has something real to win on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.processes.simulate import emit
from app.simulator.generate import generate
from app.store import create_engine
from app.store.ledger import Ledger
from app.store.registry import ModelRegistry
from app.store.training import TrainingStore
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, wait_decided, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.timeout(420)]

NAME = "transaction.fraud"


async def test_outcomes_retrain_promote_and_new_decisions_carry_the_new_version(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """4,000 transactions whose fraud pattern changes after the 500th, with their
    outcomes: the running service's trainer retrains transaction.fraud on its own (the
    drift signal or 2,500 new labelled outcomes, whichever comes first), promotes v2 (it
    beats v1 on the recent holdout), and the events produced afterwards are decided by v2
    — no restart, no command."""
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    service = ArbiterProcess(
        tmp_path / "arbiter.log",
        {
            "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "ARBITER_DATABASE_URL": url,
            "ARBITER_MODELS_DIR": str(models),
            "ARBITER_DATA_DIR": str(tmp_path / "data"),
            "ARBITER_DATABASE_AUTO_MIGRATE": "true",
            "ARBITER_MODELS_POLL_S": "0.5",
            "ARBITER_TRAINER_POLL_S": "1",
            "ARBITER_TRAINER_MIN_NEW": "2500",
            "ARBITER_TRAINER_BUDGET_S": "6",
            "ARBITER_BATCH_WAIT_MS": "20",
        },
    ).start()
    engine = create_engine(url)
    try:
        await service.wait_for_log("consuming", timeout=120)
        stream = list(
            generate(
                4000,
                seed=201,
                malformed_rate=0.0,
                mix={"transaction": 1.0},
                outcomes=True,
                drift_at=500,
            )
        )
        await emit(
            broker.bootstrap,
            stream,
            topic_for=lambda t: f"events.{t}",
            outcome_topic_for=lambda t: f"outcomes.{t}",
        )
        store, registry = TrainingStore(engine), ModelRegistry(engine)

        async def promoted() -> bool:
            runs = await store.runs(NAME)
            assert not any(r.status == "failed" for r in runs), [r.reason for r in runs]
            return any(r.status == "promoted" for r in runs)

        await wait_until(promoted, timeout=240, interval=1.0)
        (run, *_) = [r for r in await store.runs(NAME) if r.status == "promoted"]
        # Whichever came first on this machine: the planted drift (the champion's recent
        # ROC-AUC falls) or 2,500 new labelled outcomes; both are the trainer on its own.
        assert run.trigger in ("drift", "new_outcomes")
        assert run.challenger_metrics["roc_auc"] > run.champion_metrics["roc_auc"]
        champion = await registry.champion(NAME)
        assert champion is not None
        assert champion.version == run.challenger_version
        assert os.path.isfile(run.report)  # noqa: ASYNC240 (a test's one quick look)
        await service.wait_for_log("models swapped in", timeout=30)

        later = [
            e
            for e in generate(300, seed=202, malformed_rate=0.0, mix={"transaction": 1.0})
            if e.event_id
        ][:100]
        await emit(broker.bootstrap, later, topic_for=lambda t: f"events.{t}")
        decided = await wait_decided(Ledger(engine), [e.event_id or "" for e in later])
        assert {d.record.model_versions[NAME] for d in decided} == {f"v{champion.version}"}
        async with engine.connect() as conn:
            stored = (await conn.execute(sa.text("SELECT count(*) FROM outcomes"))).scalar_one()
        assert stored >= 4000
    finally:
        service.ensure_stopped()
        await engine.dispose()
