"""The HTTP API against the real thing: a Tansu broker, a SQLite ledger, the first trained
models, the shipped rules, and the consume loop running beside it in one event loop."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.settings import Settings
from app.simulator.generate import generate
from app.store.keys import KeyStore
from app.wiring import Components, consume_loop, start_components
from connectors.broker import EmbeddedBroker
from connectors.http.app import build_api
from connectors.http.serve import serve_http
from connectors.kafka.consume import ConsumeLoop
from tests.harness import read_topics, service_settings, wait_decided, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.timeout(240)]


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    components: Components
    keys: KeyStore
    settings: Settings
    loop: ConsumeLoop
    admin: str  # a key with every scope

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def _events(event_type: str, n: int, seed: int) -> list[dict[str, object]]:
    found = [
        e for e in generate(n * 6, seed=seed, malformed_rate=0.0) if e.event_type == event_type
    ]
    return [json.loads(e.value) for e in found[:n] if e.kind == "events"]


@pytest.fixture
async def api(broker: EmbeddedBroker, trained_models: Path, tmp_path: Path) -> AsyncIterator[Api]:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    settings = service_settings(broker, models, tmp_path, http_rate_per_s=5, http_rate_burst=60)
    async with start_components(settings) as c:
        keys = KeyStore(c.ledger.engine, cache_s=0.5, miss_refresh_s=0.0)
        _, admin = await keys.create("admin", ["admin"])
        app = build_api(c, keys, settings)
        loop = consume_loop(c)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://api") as client,
        ):
            yield Api(app, client, c, keys, settings, loop, admin)
        loop.stop()
        await task


async def test_events_posted_over_http_are_decided_by_the_consume_loop_and_readable(
    api: Api,
) -> None:
    """POST /v1/events (a batch) → 202 with the ids → the consume loop decides them from
    Kafka → GET /v1/decisions/{id} returns each decision with its reasons."""
    events = _events("transaction", 5, seed=201)
    ids = [str(e["event_id"]) for e in events]
    posted = await api.client.post(
        "/v1/events/transaction", json=events, headers=api.auth(api.admin)
    )
    assert posted.status_code == 202, posted.text
    assert posted.json() == {"accepted": ids}
    await wait_decided(api.components.ledger, ids, timeout=60)
    got = await api.client.get(f"/v1/decisions/{ids[0]}", headers=api.auth(api.admin))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["event_id"] == ids[0]
    assert body["reasons"]
    assert body["deliveries"] == []
    missing = await api.client.get("/v1/decisions/nope", headers=api.auth(api.admin))
    assert missing.status_code == 404


async def test_decide_gives_the_kafka_paths_decision_and_replays_the_stored_one(
    api: Api, broker: EmbeddedBroker
) -> None:
    """The same event content decided via Kafka and via /v1/decide (another event_id)
    gets the same decision, rules and scores; posting it again returns the stored one."""
    (first,) = _events("transaction", 1, seed=202)
    via_kafka = await api.client.post(
        "/v1/events/transaction", json=first, headers=api.auth(api.admin)
    )
    assert via_kafka.status_code == 202
    (kafka,) = await wait_decided(api.components.ledger, [str(first["event_id"])])
    # Same content, another event_id, and another (new) account: the account's feature
    # history then matches what the Kafka event's account had when it was decided.
    twin = {**first, "event_id": "http-twin-1", "account_id": "http-twin-account"}
    decided = await api.client.post(
        "/v1/decide/transaction", json=twin, headers=api.auth(api.admin)
    )
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["event_id"] == "http-twin-1"
    assert "Arbiter-Replayed" not in decided.headers
    assert body["decision"] == kafka.record.decision
    assert body["rules_fired"] == kafka.record.rules_fired
    assert body["scores"] == pytest.approx(kafka.record.scores)
    again = await api.client.post("/v1/decide/transaction", json=twin, headers=api.auth(api.admin))
    assert again.status_code == 200
    assert again.headers["Arbiter-Replayed"] == "true"
    assert again.json()["decided_at"] == body["decided_at"]
    # The synchronous decision is published like any other.
    out = await read_topics(broker.bootstrap, ["decisions.transaction"], until=2, settle=0.5)
    ids = {json.loads(r.value)["event_id"] for r in out["decisions.transaction"]}
    assert "http-twin-1" in ids


async def test_keys_missing_wrong_revoked_or_short_of_scope_are_refused_without_a_leak(
    api: Api,
) -> None:
    """No key, a made-up key and a revoked key get the same 401 with WWW-Authenticate;
    a valid key without the route's scope gets 403; the open routes need no key."""
    (event,) = _events("order", 1, seed=203)
    url = "/v1/events/order"
    _, reader = await api.keys.create("reader", ["decisions:read"])
    _, writer = await api.keys.create("writer", ["events:write"])
    none = await api.client.post(url, json=event)
    made_up = await api.client.post(url, json=event, headers=api.auth("arb_abcdefgh_" + "x" * 43))
    garbage = await api.client.post(url, json=event, headers={"X-API-Key": "hello"})
    assert {r.status_code for r in (none, made_up, garbage)} == {401}
    assert none.json() == made_up.json() == garbage.json()
    assert none.headers["WWW-Authenticate"] == "Bearer"
    short = await api.client.post(url, json=event, headers=api.auth(reader))
    assert short.status_code == 403
    assert "events:write" in short.json()["detail"]
    ok = await api.client.post(url, json=event, headers={"X-API-Key": writer})
    assert ok.status_code == 202, ok.text
    await api.keys.revoke("writer")
    await asyncio.sleep(0.6)  # the fixture's cache_s
    revoked = await api.client.post(url, json=event, headers=api.auth(writer))
    assert revoked.status_code == 401
    assert revoked.json() == none.json()
    for path in ("/healthz", "/metrics", "/openapi.json", "/asyncapi"):
        assert (await api.client.get(path)).status_code == 200, path


async def test_bad_bodies_are_refused_cleanly_and_nothing_is_produced(
    api: Api, broker: EmbeddedBroker
) -> None:
    """Oversize → 413, malformed JSON → 400 with its position, an invalid item → 422 per
    item with the decoder's reasons and nothing on the topic; partial=true → 207 and only
    the valid one is produced; an unknown type → 404 naming the known ones."""
    h = api.auth(api.admin)
    big = b"[" + b" " * (api.settings.http.max_body_bytes + 10) + b"]"
    assert (await api.client.post("/v1/events/order", content=big, headers=h)).status_code == 413
    bad = await api.client.post("/v1/events/order", content=b'{"event_id": "a",', headers=h)
    assert bad.status_code == 400
    assert bad.json()["line"] == 1
    assert "column" in bad.json()["detail"]
    good, other = _events("order", 2, seed=204)
    broken = {**other, "total": -5}
    refused = await api.client.post("/v1/events/order", json=[good, broken, "x"], headers=h)
    assert refused.status_code == 422
    errors = refused.json()["errors"]
    assert [(e["index"], e["reason"]) for e in errors] == [(1, "validation"), (2, "not_an_object")]
    assert "total" in errors[0]["detail"]
    partial = await api.client.post("/v1/events/order?partial=true", json=[good, broken], headers=h)
    assert partial.status_code == 207
    assert partial.json()["accepted"] == [good["event_id"]]
    out = await read_topics(broker.bootstrap, ["events.order"], until=1, settle=1.0)
    assert [json.loads(r.value)["event_id"] for r in out["events.order"]] == [good["event_id"]]
    unknown = await api.client.post("/v1/events/invoice", json=good, headers=h)
    assert unknown.status_code == 404
    assert "order, ticket, transaction" in unknown.json()["detail"]
    invalid = await api.client.post("/v1/decide/order", json=broken, headers=h)
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["reason"] == "validation"


async def test_outcomes_are_validated_and_produced(api: Api, broker: EmbeddedBroker) -> None:
    """POST /v1/outcomes → outcomes.<type>; an outcome about another type is refused."""
    h = api.auth(api.admin)
    outcome = {
        "event_id": "t-1",
        "event_type": "transaction",
        "partition_key": "acct-1",
        "occurred_at": "2026-01-01T00:00:00Z",
        "labels": {"fraud": True},
    }
    ok = await api.client.post("/v1/outcomes/transaction", json=[outcome], headers=h)
    assert ok.status_code == 202, ok.text
    wrong = await api.client.post("/v1/outcomes/order", json=outcome, headers=h)
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["reason"] == "wrong_type"
    out = await read_topics(broker.bootstrap, ["outcomes.transaction"], until=1, settle=0.5)
    assert len(out["outcomes.transaction"]) == 1


async def test_a_key_over_its_rate_gets_429_with_retry_after(api: Api) -> None:
    """Past the burst, requests are refused with 429 and a Retry-After in seconds."""
    codes = []
    for _ in range(api.settings.http.rate_burst + 5):
        r = await api.client.get("/v1/decisions/none", headers=api.auth(api.admin))
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            break
    assert codes[-1] == 429
    assert set(codes[:-1]) == {404}


async def test_readyz_reports_each_check_and_503_while_draining(api: Api) -> None:
    """Ready with broker, store, models and rules; 503 naming the check once draining."""
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"accepting", "broker", "store", "models", "rules"}
    api.app.state.api.readiness.draining = True
    draining = await api.client.get("/readyz")
    assert draining.status_code == 503
    assert draining.json()["checks"]["accepting"].startswith("draining")


async def test_asyncapi_lists_the_four_topic_families(api: Api) -> None:
    """The AsyncAPI document names events, decisions, outcomes and dlq for every type."""
    doc = (await api.client.get("/asyncapi")).json()
    assert doc["asyncapi"].startswith("3.")
    for event_type in ("order", "ticket", "transaction"):
        for kind in ("events", "decisions", "outcomes", "dlq"):
            assert f"{kind}.{event_type}" in doc["channels"]
    assert "Decision" in doc["components"]["schemas"]


async def test_serve_http_answers_on_a_real_socket_and_stops(api: Api) -> None:
    """serve_http on port 0 reports the bound port, serves, and returns once stopped."""
    stop = asyncio.Event()
    bound: list[int] = []
    task = asyncio.create_task(
        serve_http(api.app, "127.0.0.1", 0, stop=stop, on_ready=bound.append)
    )
    await wait_until(lambda: bool(bound), timeout=10, interval=0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound[0]}") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        (event,) = _events("transaction", 1, seed=205)
        decided = await client.post(
            "/v1/decide/transaction", json=event, headers=api.auth(api.admin)
        )
        assert decided.status_code == 200, decided.text
    stop.set()
    await asyncio.wait_for(task, 15)
