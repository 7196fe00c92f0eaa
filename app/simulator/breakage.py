"""Broken messages on purpose: each simulated breakage with the ``InvalidEvent`` reason
the decoder must give it (``generate`` draws them), and the byte-size fit of valid
events."""

from __future__ import annotations

import json
import random
from datetime import UTC
from typing import Any

from app.simulator.shapes import Ticket
from schemas import EventBase

# kind: expected reason; kinds that need a money field or a long text apply where they fit.
_MALFORMATIONS: dict[str, str] = {
    "truncated_json": "malformed_json",
    "json_array": "not_an_object",
    "missing_field": "validation",
    "wrong_type": "validation",
    "naive_datetime": "validation",
    "negative_amount": "validation",
    "unknown_currency": "validation",
    "oversize_body": "oversize",
}
_KINDS_FOR = {
    "transaction": ("truncated_json", "json_array", "missing_field", "wrong_type",
                    "naive_datetime", "negative_amount", "unknown_currency"),
    "order": ("truncated_json", "json_array", "missing_field", "wrong_type", "naive_datetime",
              "negative_amount", "unknown_currency"),
    "ticket": ("truncated_json", "json_array", "missing_field", "wrong_type", "naive_datetime",
               "oversize_body"),
}  # fmt: skip
_REQUIRED = {
    "transaction": ("amount", "currency", "account_id", "device", "occurred_at"),
    "order": ("items", "total", "customer_id", "currency"),
    "ticket": ("body", "subject", "customer_id", "channel"),
}
_MONEY = {"transaction": "amount", "order": "total"}


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def break_message(
    rng: random.Random, event: EventBase, value: bytes, max_event_bytes: int
) -> tuple[bytes, str | None, str]:
    """Return (broken value, event id if still readable, expected reason)."""
    event_type = event.event_type
    kind = rng.choice(_KINDS_FOR[event_type])
    doc: dict[str, Any] = json.loads(value)
    if kind == "truncated_json":
        # Any proper prefix of a JSON object lacks its closing brace, so never parses.
        return value[: rng.randrange(1, len(value) - 1)], None, _MALFORMATIONS[kind]
    if kind == "json_array":
        return _dumps([doc]), None, _MALFORMATIONS[kind]
    if kind == "missing_field":
        del doc[rng.choice(_REQUIRED[event_type])]
    elif kind == "wrong_type":
        if event_type == "ticket":
            doc["subject"] = rng.randint(1, 99_999)
        else:
            doc[_MONEY[event_type]] = rng.choice(("abc", "12,50", "free", ""))
    elif kind == "naive_datetime":
        doc["occurred_at"] = event.occurred_at.astimezone(UTC).replace(tzinfo=None).isoformat()
    elif kind == "negative_amount":
        doc[_MONEY[event_type]] = -round(doc[_MONEY[event_type]] + 1, 2)
    elif kind == "unknown_currency":
        doc["currency"] = "XYZ"
    elif kind == "oversize_body":
        filler = " Please see the log below." + " lorem ipsum dolor sit amet" * (
            max_event_bytes // 27 + 1
        )
        doc["body"] += filler
    return _dumps(doc), event.event_id, _MALFORMATIONS[kind]


def fit_size(event: EventBase, value: bytes, max_event_bytes: int) -> tuple[EventBase, bytes]:
    """Shorten a ticket body that would not fit the byte limit; valid events must decode."""
    if len(value) <= max_event_bytes:
        return event, value
    if not isinstance(event, Ticket):
        raise ValueError(
            f"a simulated {event.event_type} is {len(value):,} bytes, over max_event_bytes="
            f"{max_event_bytes:,}; raise max_event_bytes"
        )
    keep = len(event.body.encode()) - (len(value) - max_event_bytes) - 4
    if keep < 1:
        raise ValueError(f"max_event_bytes={max_event_bytes:,} is too small for a ticket")
    body = event.body.encode()[:keep].decode(errors="ignore").rstrip() or "."
    fitted = event.model_copy(update={"body": body})
    return fitted, fitted.model_dump_json().encode()
