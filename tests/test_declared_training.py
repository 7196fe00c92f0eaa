"""A type nobody shipped, from history to live decisions with no code: its history
imported from a CSV (`arbiter import`), its declared model trained on it (`arbiter
train`), then live events decided over Kafka and over HTTP with a rule on the model's
score. Real broker, real SQLite store, the real CLI and service."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.settings import Settings
from app.store import create_engine
from app.trainer.service import Trainer
from app.wiring import consume_loop, start_components
from connectors.broker import EmbeddedBroker
from tests.harness import (
    admin_client,
    arbiter,
    header,
    produce,
    read_topics,
    service_settings,
    wait_decided,
)
from tests.test_own_event_types import LOAN, RULES, as_sim, loan

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.timeout(300)]

HISTORY = 1_200
START = datetime(2026, 3, 1, tzinfo=UTC)


def defaulted(balance: float, student: bool) -> float:
    """The chance a loan defaults: mostly the balance, a little being a student."""
    return 1 / (1 + math.exp(-(-10.0 + 0.0045 * balance + 0.8 * student)))


def history(path: Path) -> int:
    """``HISTORY`` past applications with whether each defaulted; returns the positives."""
    rng = random.Random(7)
    positives = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        columns = "application_id customer_id submitted_at balance income student purpose"
        writer.writerow([*columns.split(), "defaulted"])
        for i in range(HISTORY):
            balance = round(rng.uniform(0, 3000), 2)
            student = rng.random() < 0.3
            label = rng.random() < defaulted(balance, student)
            positives += label
            writer.writerow(
                [
                    f"h-{i:05d}",
                    f"c-{rng.randrange(400)}",
                    (START + timedelta(hours=i)).isoformat(),
                    balance,
                    round(rng.uniform(10_000, 80_000), 2),
                    str(student).lower(),
                    rng.choice(["car", "home", "education"]),
                    str(label).lower(),
                ]
            )
    return positives


async def test_imported_history_trains_a_declared_model_whose_score_a_rule_reads_live(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    schemas, rules, data = tmp_path / "schemas", tmp_path / "rules", tmp_path / "data"
    for folder in (schemas, rules, data):
        folder.mkdir()
    (schemas / "loan.yaml").write_text(LOAN, encoding="utf-8")
    (rules / "loan.yaml").write_text(RULES, encoding="utf-8")
    db = tmp_path / "ledger.db"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "ARBITER_DATABASE_AUTO_MIGRATE": "true",
        "ARBITER_DATA_DIR": str(data),
        "ARBITER_SCHEMAS_DIR": str(schemas),
        "ARBITER_RULES_DIR": str(rules),
        "COLUMNS": "200",
    }
    csv_path = tmp_path / "loans.csv"
    positives = history(csv_path)
    assert 150 < positives < HISTORY - 150

    done = arbiter("import", "loan", str(csv_path), env=env, cwd=data, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(rf"^imported +{HISTORY:,}$", output, re.M), output
    assert re.search(rf"^outcomes written +{HISTORY:,}$", output, re.M), output

    # The background trainer sees the imported outcomes: the declared model is due.
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        watching = Settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            data_dir=data,
            schemas_dir=schemas,
            rules_dir=rules,
            trainer_min_new=1_000,
        )
        assert await Trainer(watching, engine).due() == {"loan.default_risk": "new_outcomes"}
    finally:
        await engine.dispose()

    done = arbiter("train", "loan.default_risk", "--budget", "5", env=env, cwd=data, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "promoted" in output, output

    refused = arbiter("train", "loan.risk", env=env, cwd=data, timeout=60)
    assert refused.returncode != 0
    assert "unknown model 'loan.risk': use one of loan.default_risk" in (
        refused.stdout + refused.stderr
    )

    # The store `arbiter import` and `arbiter train` wrote (tmp_path/ledger.db, data/).
    settings = service_settings(
        broker, data / "models", tmp_path, schemas_dir=schemas, rules_dir=rules
    )
    risky = [loan(i, f"live-{i}", balance=2900.0, student=True) for i in range(1, 4)]
    safe = [loan(i, f"live-{i}", balance=150.0, student=False) for i in range(4, 7)]
    async with start_components(settings) as c:
        assert c.processor.scorer.versions("loan") == {"loan.default_risk": "v1"}
        champion = await c.registry.champion("loan.default_risk")
        assert champion is not None
        assert champion.meta.metrics["roc_auc"] >= 0.9  # the planted pattern is learnt
        loop = consume_loop(c)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        broken = as_sim(loan(9, "live-9", balance="a lot"), "validation")
        await produce(broker.bootstrap, [as_sim(b) for b in risky + safe] + [broken])
        found = await wait_decided(c.ledger, [str(b["application_id"]) for b in risky + safe])
        by_id = {d.record.event_id: d.record for d in found}
        for body in risky:
            decision = by_id[str(body["application_id"])]
            assert decision.decision == "decline", decision
            assert decision.scores["default_risk"] >= 0.5
            assert decision.reasons[0].startswith("Default risk 0.")
            assert decision.model_versions == {"loan.default_risk": "v1"}
        for body in safe:
            decision = by_id[str(body["application_id"])]
            assert decision.decision == "approve", decision
            assert decision.scores["default_risk"] < 0.5
            assert not any("no trained version" in r for r in decision.reasons)

        async with admin_client(c, settings) as client:
            answer = await client.post("/v1/decide/loan", json=loan(20, "live-20", balance=2950.0))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["decision"] == "decline"
            assert body["scores"]["default_risk"] >= 0.5
            explained = await client.get("/v1/decisions/app-20")
            assert explained.status_code == 200, explained.text
            assert "loan.default_risk" in json.dumps(explained.json())
        loop.stop()
        await task

    topics = await read_topics(broker.bootstrap, ["decisions.loan", "dlq.loan"], until=8)
    published = [json.loads(r.value)["event_id"] for r in topics["decisions.loan"]]
    assert sorted(published) == sorted(
        [str(b["application_id"]) for b in risky + safe] + ["app-20"]
    )  # exactly one decision per event; the imported history is never published
    [dead] = topics["dlq.loan"]
    assert header(dead, "arbiter.reason") == "validation"
    assert "balance" in (header(dead, "arbiter.detail") or "")


COMPLAINT = """\
type: complaint
id: complaint_id
key: customer
time: filed_at
fields:
  complaint_id: string
  customer: string
  filed_at: datetime
  message: {type: string, text: true, max_length: 12000}
labels:
  topic: {type: enum, values: [billing, technical, account, shipping, cancellation]}
models:
  - {name: topic, predicts: {label: topic}, kind: text}
"""


def test_a_declared_text_model_of_a_type_nobody_shipped_trains_and_scores(
    tmp_path: Path,
) -> None:
    """A `kind: text` model of a new type learns from its labelled events through the
    MiniLM encoder (one pass for the type's heads) and then scores an event decoded by
    the type's own declaration, reading the field the declaration marks as text."""
    from app.declarations import load_declarations, model_catalog
    from app.inference import artifacts, text
    from app.inference.base import BatchContext
    from app.inference.loading import load_served
    from app.simulator.generate import labelled_events
    from app.trainer.jobs.job import run_job
    from app.trainer.jobs.run import Limits, Record, TrainJob

    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "complaint.yaml").write_text(COMPLAINT, encoding="utf-8")
    declarations, problems = load_declarations(folder)
    assert problems == []
    declared = model_catalog([declarations["complaint"].spec])["complaint.topic"]
    # Real-looking complaints: the simulator's support tickets, renamed into this type.
    tickets, labels = labelled_events("ticket", 500, seed=41)
    records = tuple(
        Record(
            f"c-{i}",
            "complaint",
            t.occurred_at,
            {
                "complaint_id": f"c-{i}",
                "customer": t.customer_id,  # type: ignore[attr-defined]
                "filed_at": t.occurred_at.isoformat(),
                "message": f"{t.subject}\n{t.body}",  # type: ignore[attr-defined]
            },
            {"topic": lb["category"]},
        )
        for i, (t, lb) in enumerate(zip(tickets, labels, strict=True))
    )
    job = TrainJob(
        target="complaint",
        trigger="test",
        run_ids={"complaint.topic": 1},
        records=records,
        champions={"complaint.topic": None},
        models_dir=tmp_path / "models",
        reports_dir=tmp_path / "reports",
        declared={"complaint.topic": declared},
        limits=Limits(budget_s=5.0, min_train=200, min_holdout=100),
    )
    [result] = run_job(job)
    assert result.status == "trained", result.reason
    assert result.promote
    assert result.challenger_metrics["accuracy"] >= 0.85, result.challenger_metrics
    assert result.challenger is not None
    assert result.challenger.params["text"] == ["message"]
    served = load_served(tmp_path / "models", result.challenger)
    assert isinstance(served, text.ServedText)
    assert [m.name for m in artifacts.scan(tmp_path / "models")] == ["complaint.topic"]
    event = declarations["complaint"].model.model_validate(
        {
            "complaint_id": "c-new",
            "customer": "cust-1",
            "filed_at": "2026-06-01T10:00:00Z",
            "message": "Wrong invoice\nI was charged twice for my subscription this month.",
        }
    )
    [prediction] = served.predict(BatchContext("complaint", [event], {}))
    assert prediction.scores["topic"] == "billing"
    assert 0.0 < float(prediction.scores["topic_confidence"]) <= 1.0
