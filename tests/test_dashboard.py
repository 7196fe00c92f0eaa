"""The dashboard over the real thing (Tansu broker, SQLite ledger, trained models, shipped
rules, the consume loop beside the API), plus its pure helpers."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.api import dashboard_data as data
from app.api.app import build_api
from app.service import Components, ConsumeLoop, start_components
from app.settings import Settings
from app.simulator.generate import generate
from app.store.keys import KeyStore
from app.store.tables import dead_letters, decisions
from connectors.broker import EmbeddedBroker
from tests.harness import produce, service_settings, wait_until

STATIC = Path(__file__).parent.parent / "app" / "api" / "static"
COMMENTS = re.compile(r"<!--.*?-->|/\*.*?\*/|^\s*//.*?$", re.S | re.M)


@dataclass
class Dash:
    app: FastAPI
    client: httpx.AsyncClient
    components: Components
    keys: KeyStore
    settings: Settings
    admin: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def dash(broker: EmbeddedBroker, trained_models: Path, tmp_path: Path) -> AsyncIterator[Dash]:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    settings = service_settings(broker, models, tmp_path, api_auth=True)
    async with start_components(settings) as c:
        keys = KeyStore(c.ledger.engine, cache_s=0.5, miss_refresh_s=0.0)
        _, admin = await keys.create("admin", ["admin"])
        app = build_api(c, keys, settings)
        loop = ConsumeLoop(c)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            yield Dash(app, client, c, keys, settings, admin)
        loop.stop()
        await task


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_dashboard_data_matches_the_ledger_and_opens_rules_and_payloads(dash: Dash) -> None:
    """After simulator traffic (with malformed records): counts, mix, top rules, dead
    letters and models agree with the store; a rule link gives its YAML with file:line;
    a dead letter's payload comes back HTML-escaped."""
    events = [e for e in generate(150, seed=77, malformed_rate=0.2) if e.kind == "events"]
    assert any(e.malformed for e in events)
    await produce(dash.components.bootstrap, events)
    ledger = dash.components.ledger

    async def all_stored() -> bool:
        return await ledger.count_decisions() + await ledger.count_dead_letters() == len(events)

    await wait_until(all_stored, timeout=60)
    got = await dash.client.get("/dashboard/data", headers=dash.auth(dash.admin))
    assert got.status_code == 200, got.text
    body = got.json()

    counts = await ledger.decision_counts()
    by_type = Counter[str]()
    for (event_type, _), n in counts.items():
        by_type[event_type] += n
    assert body["totals"]["decisions"] == dict(by_type)
    assert body["mix"] == {t: {d: n for (t2, d), n in counts.items() if t2 == t} for t in by_type}
    dead_counts = await ledger.dead_letter_counts()
    assert sum(body["totals"]["dead_letters"].values()) == sum(dead_counts.values()) > 0
    assert sum(r["events_per_s"] for r in body["rates"].values()) > 0
    assert body["charts"]["rate"].startswith("<svg")
    assert "<svg" in body["charts"]["latency"]
    assert body["latency"]["p50"]
    assert body["latency"]["p99"]

    async with ledger.engine.connect() as conn:
        query = sa.select(decisions.c.event_type, decisions.c.rules_fired)
        rows = (await conn.execute(query)).all()
        raw_by_id = dict(
            (await conn.execute(sa.select(dead_letters.c.id, dead_letters.c.raw))).all()
        )
    fired = Counter((t, rule) for t, rules in rows for rule in rules)
    top = body["top_rules"]
    assert top
    assert all(fired[(r["event_type"], r["rule"])] == r["hits"] for r in top)
    assert top[0]["hits"] == max(fired.values())

    listed = body["dead_letters"]
    assert {d["id"] for d in listed} <= set(raw_by_id)
    assert all(d["reason"] for d in listed)
    assert body["dead_letter_reasons"]
    assert body["can_read_payloads"] is True

    served = {m["name"]: m["champion"] for m in body["models"]}
    in_service = await dash.components.registry.in_service()
    assert served == {name: s.champion for name, s in in_service.items()}
    assert all("drift" in m and isinstance(m["metrics"], dict) for m in body["models"])

    dead = listed[0]
    payload = await dash.client.get(
        f"/dashboard/dead-letters/{dead['id']}", headers=dash.auth(dash.admin)
    )
    assert payload.status_code == 200
    raw = raw_by_id[dead["id"]][: data.PAYLOAD_LIMIT]
    assert payload.text == html.escape(raw.decode("utf-8", errors="replace"))
    missing = await dash.client.get("/dashboard/dead-letters/999999", headers=dash.auth(dash.admin))
    assert missing.status_code == 404

    rule = await dash.client.get(top[0]["link"], headers=dash.auth(dash.admin))
    assert rule.status_code == 200
    assert f"name: {top[0]['rule']}" in rule.text
    assert ".yaml:" in rule.text.splitlines()[0]
    unknown = await dash.client.get(
        "/dashboard/rules/transaction/nope", headers=dash.auth(dash.admin)
    )
    assert unknown.status_code == 404


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_the_page_is_self_contained_and_data_needs_a_scoped_key(dash: Dash) -> None:
    """``/`` serves the page (open, no external URL); with auth on the data needs a key
    with ``dashboard:read`` (401 without, 403 with another scope) and payloads need
    ``admin``; with auth off it is open; ``/reports/`` serves files and refuses ``..``."""
    page = await dash.client.get("/")
    assert page.status_code == 200
    assert "dashboard.js" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for name in ("dashboard.js", "dashboard.css"):
        assert (await dash.client.get(f"/dashboard/static/{name}")).status_code == 200

    assert (await dash.client.get("/dashboard/data")).status_code == 401
    _, writer = await dash.keys.create("writer", ["events:write"])
    _, reader = await dash.keys.create("reader", ["dashboard:read"])
    assert (await dash.client.get("/dashboard/data", headers=dash.auth(writer))).status_code == 403
    ok = await dash.client.get("/dashboard/data", headers=dash.auth(reader))
    assert ok.status_code == 200
    assert ok.json()["can_read_payloads"] is False
    denied = await dash.client.get("/dashboard/dead-letters/1", headers=dash.auth(reader))
    assert denied.status_code == 403
    dash.app.state.auth.required = False
    assert (await dash.client.get("/dashboard/data")).status_code == 200

    report = dash.settings.reports_dir / "transaction.fraud" / "run-1" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<p>report</p>")
    (dash.settings.data_dir / "secret.txt").write_text("secret")
    served = await dash.client.get("/reports/transaction.fraud/run-1/report.html")
    assert served.status_code == 200
    assert "report" in served.text
    for path in (
        "/reports/..%2Fsecret.txt",
        "/reports/%2e%2e/secret.txt",
        "/reports/../secret.txt",
    ):
        refused = await dash.client.get(path)
        assert refused.status_code == 404, path
        assert "secret" not in refused.text, path


def test_static_files_load_nothing_from_outside() -> None:
    """No http:// or https:// outside comments in the page, its script or its styles."""
    for path in STATIC.iterdir():
        code = COMMENTS.sub("", path.read_text(encoding="utf-8"))
        assert "http://" not in code, path.name
        assert "https://" not in code, path.name


def test_rule_snippet_is_the_yaml_item_from_its_line() -> None:
    """The block is the rule's line and the deeper-indented lines after it."""
    lines = ["rules:", "  - name: a", "    when: {x: 1}", "", "    reason: r", "  - name: b"]
    assert data.yaml_block(lines, 2) == ["  - name: a", "    when: {x: 1}", "", "    reason: r"]
    assert data.yaml_block(lines, 99) == []


def test_payload_is_escaped_and_cut_at_the_limit() -> None:
    """Markup in a payload comes back escaped; a long one is cut and says so."""
    small = data.payload_text(b'<script>"x"</script>\xff')
    assert small.text == "&lt;script&gt;&quot;x&quot;&lt;/script&gt;\ufffd"
    assert not small.truncated
    big = data.payload_text(b"a" * (data.PAYLOAD_LIMIT + 10))
    assert big.truncated
    assert big.size == data.PAYLOAD_LIMIT + 10
    assert len(big.text) == data.PAYLOAD_LIMIT


def test_rates_and_latency_are_bucketed_from_recent_decisions() -> None:
    """Rates count the last minute per type; latency has p50/p99 per minute."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    recent = [
        data.RecentDecision("order", "ok", float(i), now - timedelta(seconds=i), ("r1",))
        for i in range(120)
    ]
    rates = data.rates(recent, [], now)
    assert rates == {"order": {"decisions_per_s": 1.0, "events_per_s": 1.0}}
    latency = data.latency_series(recent, now)
    assert [x for x, _ in latency["p50"]] == [-1.5, -0.5]
    assert data.top_rules(recent)[0]["hits"] == 120
    assert data.report_link("/elsewhere/r.html", Path("/data/reports")) is None
    assert data.report_link("/data/reports/m/run-1/report.html", Path("/data/reports")) == (
        "/reports/m/run-1/report.html"
    )
