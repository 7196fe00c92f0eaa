"""One fixed, plausible event per event type, for warming a model up before it serves.

``scoring.warm_up`` scores the sample of a model's type once after loading, so
first-call costs (thread pools, lazy loads, the text encoder) are paid before live
traffic. The events are written out here, checked by the schemas when built, so serving
needs nothing from the simulator.
"""

from __future__ import annotations

from typing import Any

from schemas import EVENT_MODELS, EventBase

SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "transaction": {
        "event_id": "warm-up-transaction",
        "occurred_at": "2026-01-01T00:00:00Z",
        "attributes": {"account_age_days": 2682},
        "account_id": "acct-00042",
        "amount": 21.95,
        "currency": "USD",
        "merchant": "Burger Barn",
        "merchant_category": "restaurants",
        "channel": "card_present",
        "country": "US",
        "card_country": "US",
        "device": {"device_id": "pos-590561", "kind": "pos", "is_new": False},
    },
    "order": {
        "event_id": "warm-up-order",
        "occurred_at": "2026-01-01T00:00:00Z",
        "attributes": {"customer_age_days": 704},
        "customer_id": "cust-00148",
        "items": [{"sku": "SKU-00016", "quantity": 1, "unit_price": 9.99}],
        "total": 14.98,
        "currency": "GBP",
        "payment_method": "card",
        "billing_country": "GB",
        "shipping_country": "GB",
        "first_order": False,
    },
    "ticket": {
        "event_id": "warm-up-ticket",
        "occurred_at": "2026-01-01T00:00:00Z",
        "attributes": {"previous_tickets": 4},
        "customer_id": "acct-00042",
        "channel": "email",
        "subject": "Can't log in",
        "body": (
            "Hello, The two-factor code from the authenticator app is always rejected. "
            "I moved house and need to update my address before my next order. "
            "Could you look into this soon?"
        ),
        "customer_tier": "enterprise",
    },
}


def sample_events(event_type: str) -> list[EventBase]:
    """A batch of one sample event of ``event_type``."""
    try:
        payload = SAMPLE_PAYLOADS[event_type]
    except KeyError:
        raise KeyError(
            f"no sample event of type {event_type!r}: add one to SAMPLE_PAYLOADS "
            f"(known: {', '.join(SAMPLE_PAYLOADS)})"
        ) from None
    return [EVENT_MODELS[event_type].model_validate(payload)]
