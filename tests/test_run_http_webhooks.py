"""``arbiter run`` with everything on, as one process: events in over HTTP, decisions out
as signed webhooks through the outbox, /readyz draining on SIGTERM, exit 0.

A real Tansu broker, a real SQLite ledger, the real first models, a real HTTP receiver.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from app.simulator.generate import generate
from connectors.broker import EmbeddedBroker
from connectors.webhooks.client import verify
from tests.harness import ArbiterProcess, wait_until
from tests.webhook_receiver import serve

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.timeout(300)]

SECRET = "test-secret-of-32-characters-abc"


async def test_events_over_http_come_out_as_signed_webhooks_and_sigterm_drains(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """300 transactions posted to /v1/events are decided; every review/decline decision
    reaches the case_management endpoint once, signed with its secret and keyed by
    event id; GET /v1/decisions/{id} lists the delivery; on SIGTERM the process exits 0."""
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    with contextlib.contextmanager(serve)() as receiver:
        service = ArbiterProcess(
            tmp_path / "arbiter.log",
            {
                "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
                "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
                "ARBITER_MODELS_DIR": str(models),
                "ARBITER_DATA_DIR": str(tmp_path / "data"),
                "ARBITER_DATABASE_AUTO_MIGRATE": "true",
                "ARBITER_HTTP_AUTH": "false",
                "ARBITER_TRAINER_ENABLED": "false",
                "ARBITER_WEBHOOKS_POLL_S": "0.2",
                "ARBITER_CASE_MANAGEMENT_URL": receiver.url("cases"),
                "ARBITER_CASE_MANAGEMENT_SECRET": SECRET,
            },
        ).start()
        try:
            await service.wait_for_log("http api listening", timeout=120)
            port = next(
                e["port"] for e in service.log_lines() if e.get("event") == "http api listening"
            )
            base = f"http://127.0.0.1:{port}"
            events = [
                json.loads(e.value)
                for e in generate(1200, seed=401, malformed_rate=0.0, mix={"transaction": 1.0})
            ][:300]
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                await wait_until(lambda: _ready(client), timeout=60)
                posted = await client.post("/v1/events/transaction", json=events)
                assert posted.status_code == 202, posted.text
                assert sorted(posted.json()["accepted"]) == sorted(e["event_id"] for e in events)

                async def all_decided() -> bool:
                    found = [await client.get(f"/v1/decisions/{e['event_id']}") for e in events]
                    return all(r.status_code == 200 for r in found)

                await wait_until(all_decided, timeout=90, interval=1.0)
                decisions = [
                    (await client.get(f"/v1/decisions/{e['event_id']}")).json() for e in events
                ]
                flagged = {
                    d["event_id"] for d in decisions if d["decision"] in ("review", "decline")
                }
                assert flagged, "the simulator's fraud should flag some transactions"
                await wait_until(lambda: len(receiver.on("cases")) >= len(flagged), timeout=60)
                got = receiver.on("cases")
                assert {r.key for r in got} == {f"{i}:case_management" for i in flagged}
                for r in got:
                    assert verify(
                        SECRET,
                        r.headers["x-arbiter-timestamp"],
                        r.body,
                        r.headers["x-arbiter-signature"],
                        now=time.time(),
                    )
                one = next(d for d in decisions if d["event_id"] in flagged)
                shown = (await client.get(f"/v1/decisions/{one['event_id']}")).json()
                assert [x["status"] for x in shown["deliveries"]] == ["delivered"]
            assert service.terminate(timeout=60) == 0, service.log_path.read_text()
        finally:
            service.ensure_stopped()


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
