"""Unit tests of the traffic simulator: reproducible, decodable, with planted patterns."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.core.decode import decode_event
from app.errors import InvalidEvent
from app.rules.loader import load_rulesets
from app.rules.windows.store import WindowStore
from app.simulator import SimEvent, generate, shapes, training_set
from app.simulator.shapes import Order, Ticket, Transaction
from schemas import EventBase
from tests.shipped import SCORE_TYPES

LIMIT = 65_536
RULES = Path(__file__).resolve().parents[1] / "rules"
RESET = re.compile(r"(?i)password|locked out")  # the shipped password_resets_1h filter


def decode_reason(event: SimEvent) -> str | None:
    try:
        decode_event(event.event_type, event.value, max_bytes=LIMIT, models=shapes.EVENT_MODELS)
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
        decoded = decode_event(
            event.event_type, event.value, max_bytes=LIMIT, models=shapes.EVENT_MODELS
        )
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


# --- planted correlations: card-testing bursts and account takeovers -------------------


def valid_events(n: int, seed: int) -> list[EventBase]:
    return [
        decode_event(e.event_type, e.value, max_bytes=LIMIT, models=shapes.EVENT_MODELS)
        for e in generate(n, seed=seed, malformed_rate=0)
    ]


def bursts(events: list[EventBase]) -> list[list[Transaction]]:
    """Runs of 3 or more back-to-back transactions on one account."""
    runs: list[list[Transaction]] = []
    run: list[Transaction] = []
    for event in [*events, None]:
        if isinstance(event, Transaction) and run and run[-1].account_id == event.account_id:
            run.append(event)
            continue
        if len(run) >= 3:
            runs.append(run)
        run = [event] if isinstance(event, Transaction) else []
    return runs


def takeovers(events: list[EventBase]) -> list[tuple[Ticket, Transaction]]:
    """Password-reset tickets followed within the hour by a payment over 2000, same key."""
    found = []
    for n, ticket in enumerate(events):
        if not (isinstance(ticket, Ticket) and RESET.search(ticket.subject)):
            continue
        for later in events[n + 1 :]:
            if later.occurred_at - ticket.occurred_at > timedelta(hours=1):
                break
            if (
                isinstance(later, Transaction)
                and later.account_id == ticket.customer_id
                and later.amount > 2000
            ):
                found.append((ticket, later))
                break
    return found


def test_card_testing_bursts_are_planted_at_a_low_rate() -> None:
    """A few bursts per 3,000 events: one account, >= 3 countries, all > 500, in 10 minutes."""
    counts = []
    for seed in range(1, 7):
        events = valid_events(3000, seed)
        found = bursts(events)
        counts.append(len(found))
        for run in found:
            assert len({tx.country for tx in run}) >= 3
            assert all(tx.amount > 500 for tx in run)
            assert run[-1].occurred_at - run[0].occurred_at <= timedelta(minutes=10)
        labels = {
            e.event_id: e.labels["fraud"]
            for e in generate(3000, seed=seed, malformed_rate=0)
            if e.event_type == "transaction"
        }
        fraud = [bool(labels[run[0].event_id]) for run in found]
        assert all(labels[tx.event_id] == labels[run[0].event_id] for run in found for tx in run)
        assert sum(fraud) >= len(fraud) / 2, "most bursts are fraud"
    assert all(count >= 1 for count in counts), counts
    assert 3 <= sum(counts) / len(counts) <= 10, counts


def test_account_takeovers_are_planted_ticket_first_then_a_large_payment() -> None:
    """A reset ticket, then within the hour a > 2000 transfer/online payment on its id."""
    counts = []
    for seed in range(1, 7):
        events = valid_events(3000, seed)
        found = takeovers(events)
        counts.append(len(found))
        labels = {e.event_id: e.labels for e in generate(3000, seed=seed, malformed_rate=0)}
        for ticket, payment in found:
            assert ticket.customer_id.startswith("acct-")
            assert payment.occurred_at > ticket.occurred_at
            assert payment.channel in ("transfer", "online")
            assert labels[payment.event_id]["fraud"] is True
    assert all(count >= 1 for count in counts), counts
    assert sum(counts) / len(counts) <= 10, "takeovers are rare"


def test_time_order_holds_with_planted_patterns() -> None:
    """Bursts and delayed takeover payments never put the mixed stream out of time order."""
    for seed in (1, 7, 12):
        stamps = [event.occurred_at for event in valid_events(3000, seed)]
        assert stamps == sorted(stamps)


def test_shipped_windows_fire_on_the_demo_stream() -> None:
    """generate(3000, seed=7) through the real WindowStore reaches both rule thresholds."""
    field_types = {t: shapes.field_types(t) for t in ("transaction", "order", "ticket")}
    rulesets = load_rulesets(RULES, field_types, SCORE_TYPES)
    specs = [spec for ruleset in rulesets.values() for spec in ruleset.windows]
    store = WindowStore(specs)
    countries: list[float] = []
    after_reset: list[float] = []
    for sim in generate(3000, seed=7):
        if sim.malformed is not None:
            continue
        event = decode_event(sim.event_type, sim.value, max_bytes=LIMIT, models=shapes.EVENT_MODELS)
        fact = {**event.model_dump(mode="json"), "scores": {}}
        read = store.observe_and_read(
            event.event_type, event.partition_key, event.occurred_at, fact
        )
        if isinstance(event, Transaction):
            countries.append(read["countries_over_500_10m"])
            if event.amount > 2000:
                after_reset.append(read["password_resets_1h"])
    assert sum(value >= 3 for value in countries) >= 3
    assert sum(value >= 1 for value in after_reset) >= 1
