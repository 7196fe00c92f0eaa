"""The webhook protocol: how a delivery is signed, what headers it carries, and when a
failed one is tried again.

Pure functions over plain values, shared by the outbox relay
(``connectors.webhooks.relay``, which does the HTTP) and by anyone writing a receiver:
``verify`` is the documented check of ``docs/webhooks.md``. No I/O here.

Signature: ``X-Arbiter-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``
with ``timestamp`` the Unix seconds sent in ``X-Arbiter-Timestamp`` and ``body`` the raw
request bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

SIGNATURE_HEADER = "X-Arbiter-Signature"
TIMESTAMP_HEADER = "X-Arbiter-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Arbiter-Attempt"
SIGNATURE_VERSION = "v1"

# A receiver should refuse a timestamp further than this from its own clock (replays).
DEFAULT_TOLERANCE_S = 300
# However long a receiver asks us to wait (Retry-After), we come back within an hour.
MAX_RETRY_AFTER_S = 3600.0

Verdict = Literal["delivered", "retry", "failed"]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Arbiter-Signature`` value: ``v1=`` + hex HMAC-SHA256 over ``timestamp.body``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when ``header`` holds a valid ``v1`` signature of ``body`` at ``timestamp`` and the
    timestamp is within ``tolerance_s`` of ``now`` (Unix seconds). Constant-time compare;
    several comma-separated signatures are accepted (secret rotation)."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance_s:
        return False
    expected = signature(secret, sent_at, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in header.split(","))


def request_headers(
    *,
    secret: str,
    timestamp: int,
    body: bytes,
    idempotency_key: str,
    attempt: int,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every header of one delivery attempt; the endpoint's own headers cannot override the
    protocol's (a configured ``Content-Type`` or signature would break verification)."""
    headers = dict(extra or {})
    headers.update(
        {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, body),
            IDEMPOTENCY_HEADER: idempotency_key,
            ATTEMPT_HEADER: str(attempt),
        }
    )
    return headers


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential backoff
    with full jitter, ``rand() * min(cap, base * 2**(attempt - 1))``; ``rand`` returns a
    value in [0, 1) (``random.random``, or a fixed value in tests)."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 62))
    return rand() * ceiling


def classify(status: int) -> Verdict:
    """What an HTTP status means for a delivery: 2xx delivered; 5xx, 408 and 429 retry;
    anything else (4xx, or a redirect, which is not followed) fails at once."""
    if 200 <= status < 300:
        return "delivered"
    if status >= 500 or status in (408, 429):
        return "retry"
    return "failed"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP-date), clamped to
    [0, ``MAX_RETRY_AFTER_S``]; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def next_delay(
    *,
    verdict: Verdict,
    attempt: int,
    retry_after_s: float | None,
    base_s: float,
    cap_s: float,
    rand: Callable[[], float],
) -> float:
    """The wait before the next attempt of a ``retry`` verdict: the receiver's Retry-After when
    it gave one, the jittered backoff otherwise."""
    if verdict != "retry":
        raise ValueError(f"only a retry has a next attempt, not {verdict!r}")
    if retry_after_s is not None:
        return retry_after_s
    return backoff_delay(attempt, base_s=base_s, cap_s=cap_s, rand=rand)
