"""The relay: sends the outbox's due deliveries to their webhook endpoints.

One round (``run_once``) leases due deliveries (``OutboxStore.claim``), POSTs each to
its endpoint concurrently (signed, see ``connectors.webhooks``), and writes every result
in one transaction: 2xx → delivered; 5xx, 408, 429, timeouts and connection errors →
tried again after a jittered exponential backoff (or the receiver's ``Retry-After``);
other 4xx → failed at once; the last allowed attempt → failed (the dead letter). A relay
that dies mid-round sends nothing twice on purpose but may send a row again once its
lease runs out: delivery is at least once, and receivers dedupe by ``Idempotency-Key``.

``run_forever`` repeats rounds until asked to stop; a database outage is logged and
retried, never fatal. The clock and the jitter are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.metrics import WEBHOOK_DELIVERIES
from app.outbox.config import Endpoint, Endpoints
from app.settings import Settings
from app.store.outbox import Attempt, Delivery, OutboxStore
from connectors.webhooks.client import classify, next_delay, parse_retry_after, request_headers

log = structlog.get_logger("arbiter.webhooks")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_holder() -> str:
    """A name for this relay that no other process shares: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RelayPolicy:
    """How the relay works: rows per round, parallel requests, lease, idle poll, backoff."""

    batch: int = 100
    concurrency: int = 16
    lease_s: float = 60.0
    poll_s: float = 0.5
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayPolicy:
        return cls(
            batch=settings.webhooks.batch,
            concurrency=settings.webhooks.concurrency,
            lease_s=settings.webhooks.lease_s,
            poll_s=settings.webhooks.poll_s,
            backoff_base_s=settings.webhooks.backoff_base_s,
            backoff_cap_s=settings.webhooks.backoff_cap_s,
        )


@dataclass(frozen=True)
class _Sent:
    status: int | None
    error: str | None
    retry_after: str | None


def body_of(delivery: Delivery) -> bytes:
    """The exact bytes sent (and signed): the decision JSON, compact."""
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()


class Relay:
    """Sends due deliveries of ``endpoints`` through ``client``; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        endpoints: Endpoints,
        client: httpx.AsyncClient,
        *,
        clock: Clock = utcnow,
        holder: str | None = None,
        policy: RelayPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = OutboxStore(engine)
        self._endpoints = endpoints
        self._client = client
        self._clock = clock
        self.holder = holder or default_holder()
        self.policy = policy or RelayPolicy()
        self._rand = rand
        self._limit = asyncio.Semaphore(self.policy.concurrency)

    async def run_once(self) -> int:
        """One round: claim, send, record. Returns how many were delivered."""
        _, delivered = await self._round()
        return delivered

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set: at once again after a busy round, after
        ``poll_s`` after an idle one, after a growing pause after a database failure."""
        failures = 0
        while not stop.is_set():
            try:
                claimed, _ = await self._round()
                failures = 0
            except Exception as exc:  # the store being down must not stop the service
                failures += 1
                claimed = 0
                log.error(
                    "webhook relay round failed; retrying",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    failures=failures,
                )
            if claimed:
                continue
            wait = self.policy.poll_s if not failures else min(0.5 * 2**failures, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _round(self) -> tuple[int, int]:
        if not self._endpoints.active:
            return 0, 0
        now = self._clock()
        claimed = await self._store.claim(
            holder=self.holder,
            now=now,
            lease=timedelta(seconds=self.policy.lease_s),
            limit=self.policy.batch,
            endpoints=list(self._endpoints.active),
            ordered=self._endpoints.ordered,
        )
        if not claimed:
            return 0, 0
        try:
            results = await asyncio.gather(*(self._attempt(d) for d in claimed))
        except asyncio.CancelledError:
            # A clean stop mid-round: let the rows go now instead of after the lease.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.release(self.holder, [d.id for d in claimed]))
            raise
        await self._store.settle(self.holder, results)
        delivered = sum(1 for r in results if r.status == "delivered")
        return len(claimed), delivered

    async def _attempt(self, delivery: Delivery) -> Attempt:
        endpoint = self._endpoints.active[delivery.endpoint]
        attempt = delivery.attempts + 1
        async with self._limit:
            sent = await self._send(endpoint, delivery, attempt)
        now = self._clock()
        # No answer at all (timeout, connection error) is worth another try.
        verdict = classify(sent.status) if sent.status is not None else "retry"
        if verdict == "retry" and attempt >= endpoint.max_attempts:
            verdict = "failed"
        WEBHOOK_DELIVERIES.labels(endpoint=endpoint.name, result=verdict).inc()
        error = sent.error
        if verdict == "delivered":
            return Attempt(delivery.id, "delivered", attempt, now, sent.status, None, now)
        if verdict == "failed":
            log.warning(
                "webhook delivery failed; dead-lettered (arbiter deliveries retry replays it)",
                endpoint=endpoint.name,
                event_id=delivery.event_id,
                attempts=attempt,
                status=sent.status,
                error=error,
            )
            return Attempt(delivery.id, "failed", attempt, now, sent.status, error, None)
        retry_after = parse_retry_after(sent.retry_after, now) if sent.status else None
        delay = next_delay(
            verdict="retry",
            attempt=attempt,
            retry_after_s=retry_after,
            base_s=self.policy.backoff_base_s,
            cap_s=self.policy.backoff_cap_s,
            rand=self._rand,
        )
        due = now + timedelta(seconds=delay)
        return Attempt(delivery.id, "pending", attempt, due, sent.status, error, None)

    async def _send(self, endpoint: Endpoint, delivery: Delivery, attempt: int) -> _Sent:
        body = body_of(delivery)
        headers = request_headers(
            secret=endpoint.secret,
            timestamp=int(self._clock().timestamp()),
            body=body,
            idempotency_key=delivery.idempotency_key,
            attempt=attempt,
            extra=dict(endpoint.headers),
        )
        try:
            response = await self._client.post(
                endpoint.url, content=body, headers=headers, timeout=endpoint.timeout_s
            )
        except httpx.TimeoutException as exc:
            return _Sent(
                None, f"timeout after {endpoint.timeout_s:g}s ({type(exc).__name__})", None
            )
        except httpx.HTTPError as exc:
            detail = str(exc)
            return _Sent(
                None, f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__, None
            )
        status = response.status_code
        error = None
        if not 200 <= status < 300:
            snippet = response.text[:200].strip()
            error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
            if 300 <= status < 400:
                error += " (redirects are not followed: point the url at the final location)"
        return _Sent(status, error, response.headers.get("retry-after"))
