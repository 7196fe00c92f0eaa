"""A type nobody shipped, declared in a folder of its own, served with no code: its
topics, decoding and dead letters, its rules and windows (keyed by its declared key), the
HTTP routes, and a declared model that is not trained yet. Real broker, real SQLite
ledger, the real service (``start_components`` + the consume loop + the HTTP API)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from app.processes.simulate import emit
from app.simulator.generate import SimEvent
from app.wiring import all_topics, consume_loop, start_components
from connectors.broker import EmbeddedBroker
from tests.harness import admin_client, header, produce, read_topics, service_settings, wait_decided

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.timeout(240)]

LOAN = """\
type: loan
id: application_id
key: customer_id
time: submitted_at
fields:
  application_id: string
  customer_id: string
  submitted_at: datetime
  balance: {type: number, min: 0}
  income: {type: number, min: 0}
  student: boolean
  purpose: {type: enum, values: [car, home, education]}
labels:
  defaulted: boolean
models:
  - name: default_risk
    predicts: {label: defaulted}
"""

RULES = """\
ruleset: loan
default: {decision: approve, reason: Nothing against it.}
windows:
  - name: applications_1d
    within: 1d
    count: true
rules:
  - name: decline_model_risk
    when: {field: scores.default_risk, gte: 0.5}
    decision: decline
    reason: "Default risk {scores.default_risk:.2f}."
  - name: review_many_applications
    when: {field: windows.applications_1d, gte: 3}
    decision: review
    reason: "{windows.applications_1d:.0f} applications from {customer_id} within a day."
  - name: decline_high_balance
    when: {field: balance, gt: 50000}
    decision: decline
    reason: "Balance {balance} is above 50000."
"""


def outcome(event_id: str, customer: str, labels: dict[str, object]) -> SimEvent:
    body = {
        "event_id": event_id,
        "event_type": "loan",
        "partition_key": customer,
        "occurred_at": "2026-06-01T00:00:00Z",
        "labels": labels,
    }
    return SimEvent("loan", customer.encode(), json.dumps(body).encode(), event_id, None, {})


def loan(i: int, customer: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "application_id": f"app-{i}",
        "customer_id": customer,
        "submitted_at": f"2026-05-0{1 + i % 3}T1{i % 10}:00:00Z",
        "balance": 1000.0 * i,
        "income": 30000.0,
        "student": i % 2 == 0,
        "purpose": "car",
    }
    body.update(changes)
    return body


def as_sim(body: dict[str, object], malformed: str | None = None) -> SimEvent:
    key = str(body.get("customer_id", "none")).encode()
    event_id = str(body["application_id"]) if "application_id" in body else None
    return SimEvent("loan", key, json.dumps(body).encode(), event_id, malformed, {})


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    schemas, rules = tmp_path / "schemas", tmp_path / "rules"
    schemas.mkdir()
    rules.mkdir()
    (schemas / "loan.yaml").write_text(LOAN, encoding="utf-8")
    (rules / "loan.yaml").write_text(textwrap.dedent(RULES), encoding="utf-8")
    return schemas, rules


async def test_a_declared_type_is_decided_over_kafka_and_http_with_no_code(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    schemas, rules = folders
    settings = service_settings(
        broker, trained_models, tmp_path, schemas_dir=schemas, rules_dir=rules
    )
    assert settings.event_types == ("loan",)
    assert all_topics(settings) == ["events.loan", "decisions.loan", "outcomes.loan", "dlq.loan"]
    good = [
        loan(1, "c-1"),
        loan(2, "c-2"),
        loan(3, "c-3", balance=90000.0),
        loan(4, "c-4", submitted_at="2026-05-02T10:00:00Z"),
        loan(5, "c-4", submitted_at="2026-05-02T11:00:00Z"),
        loan(6, "c-4", submitted_at="2026-05-02T12:00:00Z"),  # c-4's third within a day
    ]
    bad = [
        as_sim(loan(7, "c-7", purpose="boat"), "validation"),
        as_sim({k: v for k, v in loan(8, "c-8").items() if k != "income"}, "validation"),
        as_sim(loan(9, "c-9", submitted_at="2026-05-01T10:00:00"), "validation"),
    ]
    async with start_components(settings) as c:
        loop = consume_loop(c)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        await produce(broker.bootstrap, [as_sim(body) for body in good] + bad)
        found = await wait_decided(c.ledger, [str(b["application_id"]) for b in good])
        stored = [d.record for d in found]
        by_id = {d.event_id: d for d in stored}
        assert by_id["app-1"].decision == "approve"
        assert by_id["app-3"].decision == "decline"
        assert by_id["app-3"].reasons[0] == "Balance 90000.00 is above 50000."
        assert by_id["app-6"].decision == "review"
        assert by_id["app-6"].reasons[0] == "3 applications from c-4 within a day."
        assert by_id["app-6"].partition_key == "c-4"
        for decision in stored:
            assert decision.scores == {}
            assert any(
                r.startswith("loan.default_risk: loan.default_risk has no trained version yet")
                for r in decision.reasons
            ), decision.reasons
            assert decision.payload["application_id"] == decision.event_id

        outcomes = [
            outcome("app-1", "c-1", {"defaulted": True}),
            outcome("app-2", "c-2", {"default": True}),
        ]
        await emit(broker.bootstrap, outcomes, topic_for=lambda t: f"outcomes.{t}")
        for _ in range(100):
            if await c.outcomes.labelled("loan"):
                break
            await asyncio.sleep(0.1)
        labelled = await c.outcomes.labelled("loan")
        assert [(x.event_id, x.labels) for x in labelled] == [("app-1", {"defaulted": True})]

        async with admin_client(c, settings) as client:
            decided = await client.post("/v1/decide/loan", json=loan(10, "c-10"))
            assert decided.status_code == 200, decided.text
            assert decided.json()["event_type"] == "loan"
            assert decided.json()["decision"] == "approve"
            posted = await client.post("/v1/events/loan", json=[loan(11, "c-11")])
            assert posted.status_code == 202, posted.text
            refused = await client.post("/v1/decide/loan", json=loan(12, "c-12", balance=-5))
            assert refused.status_code == 422
            assert refused.json()["errors"][0]["reason"] == "validation"
            assert "balance" in refused.json()["detail"]
            misspelt = await client.post(
                "/v1/outcomes/loan",
                json=json.loads(outcome("app-1", "c-1", {"defaulted": "maybe"}).value),
            )
            assert misspelt.status_code == 422, misspelt.text
            assert "label 'defaulted' is 'maybe'; send true or false" in misspelt.text
            described = (await client.get("/openapi.json")).json()
            decide_op = described["paths"]["/v1/decide/{event_type}"]["post"]
            [parameter] = [p for p in decide_op["parameters"] if p["name"] == "event_type"]
            assert parameter["schema"]["enum"] == ["loan"]
            body = decide_op["requestBody"]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/LoanEvent"}
            loan_schema = described["components"]["schemas"]["LoanEvent"]
            assert {"application_id", "customer_id", "submitted_at"} <= set(loan_schema["required"])
            assert loan_schema["properties"]["purpose"]["enum"] == ["car", "home", "education"]
            unknown = await client.post("/v1/events/order", json=[{}])
            assert unknown.status_code == 404
            assert unknown.json()["known_types"] == ["loan"]
        await wait_decided(c.ledger, ["app-11"])
        assert await c.ledger.count_decisions() == len(good) + 2
        loop.stop()
        await task

    topics = await read_topics(broker.bootstrap, ["decisions.loan", "dlq.loan"], until=12)
    decisions = [json.loads(r.value) for r in topics["decisions.loan"]]
    assert sorted(d["event_id"] for d in decisions) == sorted(
        [str(b["application_id"]) for b in good] + ["app-10", "app-11"]
    )  # exactly one decision per event
    reasons = sorted(header(r, "arbiter.reason") or "" for r in topics["dlq.loan"])
    assert reasons == ["validation"] * 4
    details = " ".join(header(r, "arbiter.detail") or "" for r in topics["dlq.loan"])
    assert "purpose" in details
    assert "income" in details
    assert "submitted_at has no timezone" in details
    assert "label 'default' is not declared for loan (declared: defaulted)" in details
