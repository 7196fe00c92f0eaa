"""Unit tests of the traffic simulator: reproducible, decodable, with planted patterns."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from app.errors import InvalidEvent
from app.pipeline.decode import decode_event
from app.simulator import SimEvent, generate, training_set
from schemas import Order, Ticket, Transaction

LIMIT = 65_536


def decode_reason(event: SimEvent) -> str | None:
    try:
        decode_event(event.event_type, event.value, max_bytes=LIMIT)
    except InvalidEvent as error:
        return error.reason
    return None


def test_same_seed_gives_the_same_bytes() -> None:
    """Two runs with the same seed produce identical messages."""
    assert list(generate(300, seed=11)) == list(generate(300, seed=11))


def test_different_seeds_give_different_ids() -> None:
    """Runs with different seeds share no event ids."""
    first = {event.event_id for event in generate(200, seed=1)} - {None}
    second = {event.event_id for event in generate(200, seed=2)} - {None}
    assert first
    assert not first & second


def test_event_ids_are_unique_within_a_run() -> None:
    """No event id repeats within one run."""
    ids = [event.event_id for event in generate(2000, seed=5, malformed_rate=0)]
    assert len(ids) == len(set(ids))


def test_every_valid_event_decodes_with_its_key_and_id() -> None:
    """Every valid generated message decodes to an event with the same id and key."""
    for event in generate(3000, seed=3, malformed_rate=0):
        decoded = decode_event(event.event_type, event.value, max_bytes=LIMIT)
        assert decoded.event_id == event.event_id
        assert decoded.partition_key.encode() == event.key
        assert event.labels


def test_every_malformed_event_is_rejected_with_its_code() -> None:
    """Each broken message is rejected with exactly the reason it announces."""
    events = list(generate(6000, seed=9, malformed_rate=0.2))
    broken = [event for event in events if event.malformed is not None]
    assert len(broken) > 800
    for event in broken:
        assert decode_reason(event) == event.malformed, event.value[:200]
        assert event.key
    reasons = Counter((event.event_type, event.malformed) for event in broken)
    for event_type in ("transaction", "order", "ticket"):
        for reason in ("malformed_json", "not_an_object", "validation"):
            assert reasons[(event_type, reason)] > 0
    assert reasons[("ticket", "oversize")] > 0


def test_malformed_rate_zero_gives_only_valid_events() -> None:
    """With malformed_rate=0 nothing is broken."""
    assert all(event.malformed is None for event in generate(1000, malformed_rate=0))


def test_mix_controls_the_event_types() -> None:
    """Only the types in the mix are produced, roughly in proportion."""
    counts = Counter(event.event_type for event in generate(2000, mix={"order": 3, "ticket": 1}))
    assert set(counts) == {"order", "ticket"}
    assert 2.0 < counts["order"] / counts["ticket"] < 4.5


def test_unknown_type_in_mix_is_refused() -> None:
    """A mix naming an unknown type fails at call time with the known types."""
    with pytest.raises(ValueError, match="known types"):
        generate(10, mix={"invoice": 1.0})


def test_time_advances_from_start_across_day_and_night() -> None:
    """occurred_at starts at `start`, never goes back and covers night and day hours."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    events, _ = training_set("transaction", 3000)
    times = [json.loads(e.value)["occurred_at"] for e in generate(5, start=start, malformed_rate=0)]
    assert times[0].startswith("2026-03-01T00:0")
    stamps = [event.occurred_at for event in events]
    assert stamps == sorted(stamps)
    assert {stamp.hour for stamp in stamps} == set(range(24))


def test_training_set_returns_valid_events_and_labels() -> None:
    """training_set gives n events of the asked type with matching labels."""
    for event_type, model, label in [
        ("transaction", Transaction, "fraud"),
        ("order", Order, "status"),
        ("ticket", Ticket, "category"),
    ]:
        events, labels = training_set(event_type, 200)
        assert len(events) == len(labels) == 200
        assert all(isinstance(event, model) for event in events)
        assert all(label in truth for truth in labels)


def test_order_total_is_items_plus_shipping() -> None:
    """An order total is its lines plus a known shipping fee, rounded to cents."""
    events, _ = training_set("order", 300)
    for order in events:
        assert isinstance(order, Order)
        lines = sum(item.quantity * item.unit_price for item in order.items)
        assert order.total == round(order.total, 2)
        assert round(order.total - lines, 2) in {0.0, 4.99, 15.0, 19.99}


def test_fraud_is_likelier_abroad_on_a_new_device_at_night() -> None:
    """Foreign, new-device, night transactions are fraud far more often than overall."""
    events, labels = training_set("transaction", 20_000)
    overall = sum(bool(truth["fraud"]) for truth in labels) / len(labels)
    risky = [
        bool(truth["fraud"])
        for event, truth in zip(events, labels, strict=True)
        if isinstance(event, Transaction)
        and event.country != event.card_country
        and event.device.is_new
        and event.occurred_at.hour < 6
    ]
    assert len(risky) >= 10
    assert 0.005 < overall < 0.15
    assert sum(risky) / len(risky) > 3 * overall


def test_order_problems_are_likelier_with_risky_signals() -> None:
    """Orders shipped abroad and paid by gift card or crypto go wrong more often."""
    events, labels = training_set("order", 10_000)
    overall = sum(bool(truth["problem"]) for truth in labels) / len(labels)
    risky = [
        bool(truth["problem"])
        for event, truth in zip(events, labels, strict=True)
        if isinstance(event, Order)
        and (event.billing_country != event.shipping_country)
        and event.payment_method in ("gift_card", "crypto", "card", "paypal")
        and event.first_order
    ]
    assert risky
    assert sum(risky) / len(risky) > 2 * overall
    statuses = {truth["status"] for truth in labels}
    assert statuses == {"fulfilled", "cancelled", "returned", "chargeback"}


def test_tickets_cover_categories_and_urgency_words_mean_high_urgency() -> None:
    """Tickets span all categories; high-urgency ones carry an urgency phrase."""
    events, labels = training_set("ticket", 1500)
    assert {truth["category"] for truth in labels} == {
        "billing",
        "technical",
        "account",
        "shipping",
        "cancellation",
    }
    assert {truth["sentiment"] for truth in labels} == {"negative", "neutral", "positive"}
    words = ("urgent", "asap", "immediately", "locked out", "still waiting", "third time")
    high = [
        event
        for event, truth in zip(events, labels, strict=True)
        if truth["urgency"] == "high" and isinstance(event, Ticket)
    ]
    with_word = [e for e in high if any(w in (e.subject + e.body).lower() for w in words)]
    # Typos may garble the one urgency word in a few tickets.
    assert len(with_word) > 0.85 * len(high)
    bodies = {event.body for event in events if isinstance(event, Ticket)}
    assert len(bodies) > 1400
