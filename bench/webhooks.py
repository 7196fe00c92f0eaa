"""Webhook throughput: deliveries/s through the outbox relay to a local receiver, against
plain sequential httpx POSTs of the same signed bodies to the same receiver (baseline).

- **receiver**: uvicorn + a bare ASGI app answering 200, in its own process on loopback
  (so it does not share the relay's GIL).
- **relay**: ``--deliveries`` rows stored in a fresh, migrated store (SQLite file by
  default, ``--database-url`` for PostgreSQL) through ``Ledger.record`` — the same write
  the processor does — then ``Relay.run_once`` rounds until every row is delivered:
  claim (lease) → concurrent signed POSTs → one transaction of results per round.
- **baseline**: one ``httpx.AsyncClient``, one awaited POST after another, same bodies and
  headers, no database.

    .venv/bin/python bench/webhooks.py                     # prints
    .venv/bin/python bench/webhooks.py --deliveries 500 --append
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from benchlib import append_results, git_commit

from app.outbox.config import Endpoint, Endpoints
from app.store import Ledger, create_engine, upgrade
from app.values import DecisionRecord, DeliveryRecord
from connectors.webhooks.client import request_headers
from connectors.webhooks.relay import Relay, RelayPolicy

RECEIVER = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="off")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.post(url, content=b"{}")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"receiver at {url} did not start")


def payload(i: int) -> dict[str, object]:
    """About the size of a real decision's JSON (~700 bytes)."""
    return {
        "event_id": f"bench-{i:08d}",
        "event_type": "transaction",
        "partition_key": f"acct-{i % 500}",
        "decision": "review",
        "actions": [{"type": "webhook", "name": "bench"}, {"type": "tag", "tags": ["fraud"]}],
        "scores": {"fraud": 0.8123},
        "model_versions": {"transaction.fraud": "v3"},
        "rules_fired": ["review_likely_fraud"],
        "reasons": ["Fraud score 0.81 is high and the device is new to this account."],
        "explanations": {"transaction.fraud": {"method": "linear", "top": [["amount", 1.2]]}},
        "ruleset_version": "0123456789ab",
        "occurred_at": "2026-11-30T12:00:00Z",
        "decided_at": "2026-11-30T12:00:00.004Z",
        "latency_ms": 4.2,
    }


async def baseline(url: str, n: int) -> float:
    """Sequential signed POSTs; deliveries/s."""
    import json

    bodies = [json.dumps(payload(i), separators=(",", ":")).encode() for i in range(n)]
    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        for i, body in enumerate(bodies):
            headers = request_headers(
                secret="bench-secret",
                timestamp=int(time.time()),
                body=body,
                idempotency_key=f"bench-{i:08d}:bench",
                attempt=1,
            )
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()
        return n / (time.perf_counter() - started)


async def relay_rate(url: str, n: int, database_url: str, policy: RelayPolicy) -> tuple[float, int]:
    """Seed ``n`` deliveries, run rounds until all are delivered; (deliveries/s, rounds)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    now = dt.datetime.now(dt.UTC)
    try:
        ledger = Ledger(engine)
        for start in range(0, n, 500):
            ids = range(start, min(start + 500, n))
            decisions = [
                DecisionRecord(
                    event_id=f"bench-{i:08d}",
                    event_type="transaction",
                    partition_key=f"acct-{i % 500}",
                    decision="review",
                    actions=[],
                    scores={},
                    model_versions={},
                    rules_fired=[],
                    reasons=[],
                    payload={},
                    latency_ms=1.0,
                    occurred_at=now,
                    decided_at=now,
                    source_topic="events.transaction",
                    source_partition=0,
                    source_offset=i,
                )
                for i in ids
            ]
            owed = [
                DeliveryRecord(f"bench-{i:08d}", "bench", f"acct-{i % 500}", payload(i), now)
                for i in ids
            ]
            await ledger.record(decisions, [], deliveries=owed)
        eps = Endpoints(active={"bench": Endpoint("bench", url, "bench-secret")})
        limits = httpx.Limits(max_connections=policy.concurrency)
        async with httpx.AsyncClient(limits=limits) as client:
            relay = Relay(engine, eps, client, policy=policy)
            delivered = rounds = 0
            started = time.perf_counter()
            while delivered < n:
                delivered += await relay.run_once()
                rounds += 1
            return n / (time.perf_counter() - started), rounds
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="relay rows per round")
    parser.add_argument("--concurrency", type=int, default=16, help="relay requests in flight")
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    policy = RelayPolicy(batch=args.batch, concurrency=args.concurrency)
    try:
        asyncio.run(wait_up(url))
        base = asyncio.run(baseline(url, args.deliveries))
        with tempfile.TemporaryDirectory() as tmp:
            db = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            rate, rounds = asyncio.run(relay_rate(url, args.deliveries, db, policy))
    finally:
        receiver.terminate()
        receiver.wait(10)
    store = "PostgreSQL" if args.database_url else "SQLite (WAL)"
    table = (
        "| path | deliveries | deliveries/s |\n|---|---:|---:|\n"
        f"| outbox relay ({store}; batch {args.batch}, {args.concurrency} in flight; "
        f"{rounds} rounds) | {args.deliveries:,} | {rate:,.0f} |\n"
        f"| baseline: sequential httpx POSTs, no store | {args.deliveries:,} | {base:,.0f} |\n"
        f"\nrelay / baseline: {rate / base:.2f}x"
    )
    print(table)
    if not args.append:
        return 0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## webhooks: outbox relay vs sequential POSTs — {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, load average before the run "
        f"{load_before}\n"
        f"- git commit: {git_commit()}\n"
        f"- command: `.venv/bin/python bench/webhooks.py {' '.join(argv or sys.argv[1:])}`\n"
        "- receiver: uvicorn + a bare ASGI app answering 200, its own process, loopback; "
        "bodies ~700 B decision JSON, HMAC-signed\n"
        "- relay: rows stored with `Ledger.record(..., deliveries=...)` beforehand (not "
        "timed); timed from the first `run_once` until every row is delivered (claim with a "
        "lease, concurrent POSTs, one results transaction per round). Baseline: one "
        "`httpx.AsyncClient`, one awaited POST after another, no store\n\n"
        f"{table}\n"
    )
    return append_results(section)


if __name__ == "__main__":
    sys.exit(main())
