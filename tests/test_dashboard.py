"""The dashboard over the real thing (Tansu broker, SQLite ledger, trained models, shipped
rules, the consume loop beside the API), plus its pure helpers."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.settings import Settings
from app.simulator.generate import generate
from app.store.keys import KeyStore
from app.store.tables import dead_letters, decisions
from app.store.training import TrainingStore
from app.wiring import Components, consume_loop, start_components
from connectors.broker import EmbeddedBroker
from connectors.http import dashboard, links
from connectors.http import dashboard_data as data
from connectors.http.app import build_api
from tests.harness import produce, service_settings, wait_until

STATIC = Path(__file__).parent.parent / "connectors" / "http" / "static"
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
        loop = consume_loop(c)
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


REPORT_HTML = '<html><body><p>report</p><a href="roc.svg">roc.svg</a></body></html>'
ROC_SVG = '<svg xmlns="http://www.w3.org/2000/svg"/>'


async def _report(dash: Dash, run: int, model: str = "transaction.fraud") -> str:
    """A report folder like the trainer's (page, chart, data) and its training run row;
    the page's path under ``/reports/``."""
    folder = dash.settings.reports_dir / model / f"run-{run}"
    folder.mkdir(parents=True)
    (folder / "report.html").write_text(REPORT_HTML)
    (folder / "roc.svg").write_text(ROC_SVG)
    (folder / "scores.csv").write_text("score,label\n0.9,1\n")
    store = TrainingStore(dash.components.ledger.engine)
    run_id = await store.open_run(model, "manual", "test", 0)
    await store.close_run(run_id, "kept", reason="test", report=str(folder / "report.html"))
    return f"/reports/{model}/run-{run}/report.html"


async def _signed_link(dash: Dash, key: str, page: str) -> str:
    """The report link ``/dashboard/data`` hands to ``key`` for ``page``."""
    body = (await dash.client.get("/dashboard/data", headers=dash.auth(key))).json()
    found = [r["report"] for r in body["training_runs"] if r["report"].startswith(page + "?")]
    assert len(found) == 1, body["training_runs"]
    return str(found[0])


def _sig(url: str) -> str:
    return url.split(f"?{links.PARAM}=", 1)[1]


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_a_report_without_a_key_is_refused_with_401(dash: Dash) -> None:
    """With auth on, a report and its chart need a key: 401 with the Problem JSON naming
    the fix; a key without ``dashboard:read`` gets 403."""
    page = await _report(dash, 1)
    for path in (page, page.replace("report.html", "roc.svg")):
        refused = await dash.client.get(path)
        assert refused.status_code == 401, path
        assert "dashboard:read" in refused.json()["detail"]
        assert "<p>report</p>" not in refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
    _, writer = await dash.keys.create("writer", ["events:write"])
    assert (await dash.client.get(page, headers=dash.auth(writer))).status_code == 403
    assert (await dash.client.get(page, headers=dash.auth("arb_nope"))).status_code == 401


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_a_report_is_served_with_a_dashboard_read_key_header(dash: Dash) -> None:
    """A ``dashboard:read`` key in the header opens every file of a report, each with its
    content type, nosniff and the report CSP; 404 for a missing file."""
    page = await _report(dash, 1)
    _, reader = await dash.keys.create("reader", ["dashboard:read"])
    folder = page.rsplit("/", 1)[0]
    expected = {
        "report.html": "text/html; charset=utf-8",
        "roc.svg": "image/svg+xml",
        "scores.csv": "text/csv; charset=utf-8",
    }
    for name, media_type in expected.items():
        got = await dash.client.get(f"{folder}/{name}", headers=dash.auth(reader))
        assert got.status_code == 200, name
        assert got.headers["content-type"] == media_type
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in got.headers["content-security-policy"]
    assert (await dash.client.get(page, headers=dash.auth(reader))).text == REPORT_HTML
    missing = await dash.client.get(f"{folder}/pr.svg", headers=dash.auth(reader))
    assert missing.status_code == 404
    assert "detail" in missing.json()


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_the_signed_link_from_dashboard_data_opens_the_report_without_a_header(
    dash: Dash,
) -> None:
    """The data's report URL carries ``?sig=`` and opens the page with no header; the
    answer leaves the signature in an HttpOnly, SameSite=Strict cookie scoped to the
    report's folder, which opens the chart the page links to by relative URL."""
    page = await _report(dash, 1)
    _, reader = await dash.keys.create("reader", ["dashboard:read"])
    link = await _signed_link(dash, reader, page)
    prefix, expires, _ = _sig(link).split(".")
    assert reader.startswith(f"arb_{prefix}_")
    assert 0 < int(expires) - time.time() <= links.TTL_S

    opened = await dash.client.get(link)
    assert opened.status_code == 200, opened.text
    assert opened.text == REPORT_HTML
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith(f"{dashboard.REPORT_COOKIE}={_sig(link)};")
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert "path=/reports/transaction.fraud/run-1/" in attributes
    assert {"httponly", "samesite=strict"} <= attributes

    dash.client.cookies.clear()
    chart = page.replace("report.html", "roc.svg")
    assert (await dash.client.get(chart)).status_code == 401
    with_cookie = await dash.client.get(
        chart, headers={"Cookie": f"{dashboard.REPORT_COOKIE}={_sig(link)}"}
    )
    assert with_cookie.status_code == 200
    assert with_cookie.text == ROC_SVG


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_a_tampered_or_expired_report_signature_is_refused(dash: Dash) -> None:
    """A changed MAC, a changed expiry, a malformed value or an expired signature (made
    with the right key) gets 401, in the query and in the cookie alike."""
    page = await _report(dash, 1)
    _, reader = await dash.keys.create("reader", ["dashboard:read"])
    sig = _sig(await _signed_link(dash, reader, page))
    prefix, expires, mac = sig.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    found = await dash.keys.by_prefix(prefix)
    assert found is not None
    relative = page.removeprefix("/reports/")
    expired = links.sign(relative, prefix, found[1], int(time.time()) - 1)
    for bad in (
        f"{prefix}.{expires}.{flipped}",
        f"{prefix}.{int(expires) + 3600}.{mac}",
        "garbage",
        expired,
    ):
        dash.client.cookies.clear()
        refused = await dash.client.get(page, params={links.PARAM: bad})
        assert refused.status_code == 401, bad
        assert "reload the dashboard" in refused.json()["detail"]
        assert "set-cookie" not in refused.headers
        as_cookie = await dash.client.get(
            page, headers={"Cookie": f"{dashboard.REPORT_COOKIE}={bad}"}
        )
        assert as_cookie.status_code == 401, bad


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_a_signature_of_a_revoked_key_is_refused(dash: Dash) -> None:
    """A link signed for a key stops opening the report once the key is revoked."""
    page = await _report(dash, 1)
    _, reader = await dash.keys.create("reader", ["dashboard:read"])
    link = await _signed_link(dash, reader, page)
    assert (await dash.client.get(link)).status_code == 200
    dash.client.cookies.clear()
    assert await dash.keys.revoke("reader") is not None
    assert (await dash.client.get(link)).status_code == 401
    headers = {"Cookie": f"{dashboard.REPORT_COOKIE}={_sig(link)}"}
    assert (await dash.client.get(page, headers=headers)).status_code == 401


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_a_signature_for_another_report_folder_is_refused(dash: Dash) -> None:
    """A signature covers its own report's folder only: on another run's report, in the
    query or the cookie, it gets 401."""
    first = await _report(dash, 1)
    second = await _report(dash, 2)
    _, reader = await dash.keys.create("reader", ["dashboard:read"])
    sig = _sig(await _signed_link(dash, reader, first))
    dash.client.cookies.clear()
    assert (await dash.client.get(second, params={links.PARAM: sig})).status_code == 401
    headers = {"Cookie": f"{dashboard.REPORT_COOKIE}={sig}"}
    assert (await dash.client.get(second, headers=headers)).status_code == 401
    assert (await dash.client.get(first, params={links.PARAM: sig})).status_code == 200


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_report_paths_outside_the_reports_folder_are_404(dash: Dash) -> None:
    """``..``, an absolute path and a symlink out of the folder are 404 even for a key
    that may read reports, and nothing of the file outside leaks."""
    page = await _report(dash, 1)
    _, reader = await dash.keys.create("reader", ["dashboard:read"])
    secret = dash.settings.data_dir / "secret.txt"
    secret.write_text("secret")
    (dash.settings.reports_dir / "transaction.fraud" / "run-1" / "escape.txt").symlink_to(secret)
    (dash.settings.reports_dir / "out").symlink_to(dash.settings.data_dir)
    sig = _sig(await _signed_link(dash, reader, page))
    for path in (
        "/reports/..%2Fsecret.txt",
        "/reports/%2e%2e/secret.txt",
        "/reports/transaction.fraud/run-1/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        f"/reports/{'%2F'.join(['', *str(secret).strip('/').split('/')])}",
        "/reports/transaction.fraud/run-1/escape.txt",
        "/reports/out/secret.txt",
    ):
        for headers, params in ((dash.auth(reader), {}), ({}, {links.PARAM: sig})):
            refused = await dash.client.get(path, headers=headers, params=params)
            assert refused.status_code in (401, 404), path
            if headers:
                assert refused.status_code == 404, path
            assert "secret" not in refused.text, path


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_reports_are_served_without_a_key_when_auth_is_off(dash: Dash) -> None:
    """With auth off, report files open with no key and the data's links carry no
    signature."""
    page = await _report(dash, 1)
    dash.app.state.auth.required = False
    body = (await dash.client.get("/dashboard/data")).json()
    assert [r["report"] for r in body["training_runs"]] == [page]
    served = await dash.client.get(page)
    assert served.status_code == 200
    assert served.text == REPORT_HTML
    assert "set-cookie" not in served.headers
    chart = await dash.client.get(page.replace("report.html", "roc.svg"))
    assert chart.headers["content-type"] == "image/svg+xml"


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(300)
async def test_models_in_service_follow_new_decisions_before_the_drift_window_fills(
    dash: Dash,
) -> None:
    """Right after start-up the models block shows new decisions within seconds, not
    after the 30 s cache: decide a few events, read, decide more, read again."""
    engine = dash.components.ledger.engine

    async def ledger_counts() -> dict[str, int]:
        async with engine.connect() as conn:
            query = sa.select(decisions.c.event_type, sa.func.count()).group_by(
                decisions.c.event_type
            )
            return {t: int(n) for t, n in (await conn.execute(query)).all()}

    async def drift_counts() -> dict[str, int]:
        got = await dash.client.get("/dashboard/data", headers=dash.auth(dash.admin))
        assert got.status_code == 200, got.text
        return {m["name"]: m["drift"]["decisions"] for m in got.json()["models"]}

    async def shown(before: int) -> bool:
        """The block shows more decisions than ``before``, as many as the ledger holds."""
        counts = await drift_counts()
        stored = await ledger_counts()
        return sum(counts.values()) > before and all(
            n == stored.get(name.split(".", 1)[0], 0) for name, n in counts.items()
        )

    first = await drift_counts()
    assert first
    assert set(first.values()) == {0}
    events = [e for e in generate(60, seed=5) if e.kind == "events" and not e.malformed]
    for batch in (events[:30], events[30:]):
        read_at = time.monotonic()
        await produce(dash.components.bootstrap, batch)
        await wait_until(partial(shown, sum(first.values())), timeout=dashboard.MODELS_TTL_S / 2)
        assert time.monotonic() - read_at < dashboard.MODELS_TTL_S
        first = await drift_counts()
    assert sum(first.values()) > 0


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


def test_a_report_link_is_signed_for_its_folder_and_expires() -> None:
    """``sign``/``verify``: the signature opens every file of its folder until it
    expires, and nothing else: another folder, another secret, a changed part."""
    secret = "ab" * 32
    token = links.sign("m/run-1/report.html", "abcd1234", secret, expires=1_000)
    sig = links.parse(token)
    assert sig == links.Signature("abcd1234", 1_000, token.rsplit(".", 1)[1])
    assert links.verify(sig, "m/run-1/report.html", secret, now=999.0)
    assert links.verify(sig, "m/run-1/roc.svg", secret, now=0.0)
    assert not links.verify(sig, "m/run-1/report.html", secret, now=1_000.0)
    assert not links.verify(sig, "m/run-2/report.html", secret, now=0.0)
    assert not links.verify(sig, "m/run-1/sub/report.html", secret, now=0.0)
    assert not links.verify(sig, "report.html", secret, now=0.0)
    assert not links.verify(sig, "m/run-1/report.html", "cd" * 32, now=0.0)
    longer = links.Signature(sig.prefix, 9_999, sig.mac)
    assert not links.verify(longer, "m/run-1/report.html", secret, now=0.0)
    assert links.seconds_left(sig, 400.0) == 600
    assert links.seconds_left(sig, 2_000.0) == 0


def test_only_well_formed_signatures_and_clean_report_paths_pass() -> None:
    """``parse`` takes only ``prefix.expires.hex-mac``; ``clean`` refuses ``..``, ``.``,
    absolute paths, empty parts, backslashes and NUL; ``folder`` is the parent."""
    mac = "0" * 64
    assert links.parse(f"abcd1234.10.{mac}") is not None
    for bad in (
        "",
        "x",
        f"ABCD1234.10.{mac}",
        f"abcd1234.-1.{mac}",
        f"abcd1234.10.{mac}0",
        f"abcd1234.10.{mac} ",
        f"abcd123.10.{mac}",
    ):
        assert links.parse(bad) is None, bad
    assert links.clean("m/run-1/report.html") == "m/run-1/report.html"
    for bad in ("", "../x", "m/../../x", "/etc/passwd", "m//x", "./x", "m/x/", "a\\b", "a\x00"):
        assert links.clean(bad) is None, bad
    assert links.folder("m/run-1/report.html") == "m/run-1/"
    assert links.folder("report.html") == ""


def test_signed_report_links_carry_the_quoted_path_and_the_signature() -> None:
    """``report_link`` quotes the path and appends ``?sig=`` from the signer, which gets the
    decoded path under the reports folder."""
    seen: list[str] = []

    def sign(path: str) -> str:
        seen.append(path)
        return "abcd1234.1.ff"

    link = data.report_link("/data/reports/m x/run-1/report.html", Path("/data/reports"), sign)
    assert link == "/reports/m%20x/run-1/report.html?sig=abcd1234.1.ff"
    assert seen == ["m x/run-1/report.html"]


def test_the_models_block_is_kept_30_s_only_once_every_drift_window_is_full() -> None:
    """Full windows for every champion: the long TTL; a short window, or no champion at
    all: the short one (models without a champion do not count)."""

    def model(champion: int | None, decisions: int) -> dict[str, object]:
        return {"champion": champion, "drift": {"decisions": decisions}}

    full, short = 30.0, 2.0
    assert data.models_ttl([model(1, 100), model(2, 120)], 100, full, short) == full
    assert data.models_ttl([model(1, 100), model(None, 0)], 100, full, short) == full
    assert data.models_ttl([model(1, 100), model(2, 99)], 100, full, short) == short
    assert data.models_ttl([model(None, 0)], 100, full, short) == short
    assert data.models_ttl([], 100, full, short) == short
    cached = data.Timed([], at=10.0, ttl_s=2.0)
    assert cached.fresh(11.9)
    assert not cached.fresh(12.0)
