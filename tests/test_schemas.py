"""Unit tests of the event, decision and outcome contracts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.simulator.shapes import EVENT_MODELS, Order, Ticket, Transaction, field_types
from schemas import COUNTRIES, CURRENCIES, Decision, EventBase, Outcome
from schemas.export import write_json_schemas

WHEN = "2026-01-31T12:00:00Z"


def transaction_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "txn-1",
        "occurred_at": WHEN,
        "account_id": "acct-00001",
        "amount": 12.5,
        "currency": "EUR",
        "merchant": "FreshMart",
        "merchant_category": "grocery",
        "channel": "card_present",
        "country": "DE",
        "card_country": "DE",
        "device": {"device_id": "pos-000001", "kind": "pos", "is_new": False},
        "attributes": {"account_age_days": 400, "vip": True, "segment": "retail"},
    }
    doc.update(changes)
    return doc


def order_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "ord-1",
        "occurred_at": WHEN,
        "customer_id": "cust-00001",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": 9.99}],
        "total": 24.97,
        "currency": "USD",
        "payment_method": "card",
        "billing_country": "US",
        "shipping_country": "US",
        "first_order": True,
    }
    doc.update(changes)
    return doc


def ticket_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "tkt-1",
        "occurred_at": WHEN,
        "customer_id": "cust-00001",
        "channel": "email",
        "subject": "Charged twice",
        "body": "I was charged twice for order #123456.",
        "customer_tier": "premium",
    }
    doc.update(changes)
    return doc


def error_text(model: type[EventBase], doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps(doc))
    return str(caught.value)


@pytest.mark.parametrize(
    ("model", "doc", "key"),
    [
        (Transaction, transaction_doc(), "acct-00001"),
        (Order, order_doc(), "cust-00001"),
        (Ticket, ticket_doc(), "cust-00001"),
    ],
)
def test_valid_event_round_trips_through_json(
    model: type[EventBase], doc: dict[str, Any], key: str
) -> None:
    """A valid event parses, keeps its partition key and survives dump/parse unchanged."""
    event = model.model_validate_json(json.dumps(doc))
    assert event.partition_key == key
    assert model.model_validate_json(event.model_dump_json()) == event
    assert EVENT_MODELS[model.event_type] is model


def test_events_are_immutable() -> None:
    """An event cannot be changed after validation."""
    event = Transaction.model_validate(transaction_doc())
    with pytest.raises(ValidationError):
        event.amount = 1.0  # type: ignore[misc]


def test_unknown_field_is_refused_by_name() -> None:
    """A field the contract does not know is refused and named."""
    text = error_text(Transaction, transaction_doc(colour="red"))
    assert "colour" in text
    assert "Extra inputs are not permitted" in text


def test_naive_datetime_is_refused_with_the_fix() -> None:
    """A time without offset is refused with an example of a correct one."""
    text = error_text(Ticket, ticket_doc(occurred_at="2026-01-31T12:00:00"))
    assert "occurred_at has no timezone: send an ISO-8601 time with an offset" in text
    assert "2026-01-31T12:00:00Z" in text


def test_unknown_currency_is_refused_with_examples() -> None:
    """An unknown currency code names the code and suggests real ones."""
    text = error_text(Transaction, transaction_doc(currency="XYZ"))
    assert "unknown currency code 'XYZ': use an ISO 4217 code such as EUR, USD or GBP" in text


def test_lower_case_currency_is_refused_with_the_upper_case_code() -> None:
    """A lower-case currency code is refused with the exact value to send instead."""
    assert "send 'EUR'" in error_text(Transaction, transaction_doc(currency="eur"))


def test_unknown_country_is_refused_by_field() -> None:
    """An unassigned country code is refused naming the field and the code."""
    text = error_text(Order, order_doc(shipping_country="XX"))
    assert "shipping_country" in text
    assert "unknown country code 'XX'" in text


def test_country_list_is_the_full_iso_3166_set() -> None:
    """All 249 ISO 3166-1 alpha-2 codes are known; the currency list holds real codes."""
    assert len(COUNTRIES) == 249
    assert {"DE", "US", "GB", "AX", "SS", "ZW"} <= COUNTRIES
    assert {"EUR", "USD", "GBP", "JPY"} <= CURRENCIES
    assert len(CURRENCIES) >= 40


def test_negative_amount_is_refused() -> None:
    """A negative amount names the field and the bound."""
    text = error_text(Transaction, transaction_doc(amount=-12.5))
    assert "amount" in text
    assert "greater than or equal to 0" in text


def test_amount_above_the_ceiling_is_refused() -> None:
    """An amount above 10,000,000 is refused."""
    assert "less than or equal to" in error_text(Transaction, transaction_doc(amount=2e7))


def test_oversize_body_names_length_limit_and_fix() -> None:
    """A ticket body over 10,000 characters states its length, the limit and what to do."""
    text = error_text(Ticket, ticket_doc(body="x" * 12_345))
    assert "body is 12,345 characters; the limit is 10,000" in text
    assert "shorten it" in text


def test_event_id_with_spaces_is_refused() -> None:
    """An event id outside the allowed characters is refused by field name."""
    assert "event_id" in error_text(Order, order_doc(event_id="has spaces"))


def test_order_needs_at_least_one_item() -> None:
    """An order with no items is refused."""
    assert "items" in error_text(Order, order_doc(items=[]))


def test_attributes_are_bounded() -> None:
    """More than 50 attributes, or a long attribute string, is refused."""
    too_many = {f"k{i}": i for i in range(51)}
    assert "attributes" in error_text(Transaction, transaction_doc(attributes=too_many))
    long_value = {"note": "x" * 257}
    assert "attributes.note" in error_text(Transaction, transaction_doc(attributes=long_value))


def test_attribute_values_keep_their_json_type() -> None:
    """Attribute values come back as the JSON type that was sent."""
    event = Transaction.model_validate_json(json.dumps(transaction_doc()))
    assert event.attributes == {"account_age_days": 400, "vip": True, "segment": "retail"}
    assert isinstance(event.attributes["vip"], bool)


def test_decision_round_trips_through_json() -> None:
    """A decision with actions, scores and reasons survives JSON unchanged."""
    decided = datetime(2026, 1, 31, 12, 0, 1, tzinfo=UTC)
    decision = Decision(
        event_id="txn-1",
        event_type="transaction",
        partition_key="acct-00001",
        decision="review",
        actions=({"type": "webhook", "target": "fraud-desk", "priority": 2},),
        scores={"fraud": 0.91, "band": "high"},
        model_versions={"fraud": "fraud-2026-01-30.3"},
        rules_fired=("foreign_new_device",),
        reasons=("card used abroad on a new device",),
        occurred_at=decided - timedelta(seconds=1),
        decided_at=decided,
        latency_ms=3.2,
    )
    assert Decision.model_validate_json(decision.model_dump_json()) == decision


def test_outcome_requires_labels() -> None:
    """An outcome without any label is refused; one with labels parses."""
    doc = {
        "event_id": "ord-1",
        "event_type": "order",
        "partition_key": "cust-00001",
        "occurred_at": WHEN,
        "labels": {},
    }
    with pytest.raises(ValidationError, match="labels"):
        Outcome.model_validate(doc)
    outcome = Outcome.model_validate({**doc, "labels": {"status": "chargeback"}})
    assert outcome.source is None


def test_field_types_of_order_cover_nested_paths() -> None:
    """field_types lists nested and list-item paths with their kinds."""
    kinds = field_types("order")
    assert kinds["items"] == "array"
    assert kinds["items.*"] == "object"
    assert kinds["items.*.sku"] == "string"
    assert kinds["items.*.quantity"] == "number"
    assert kinds["total"] == "number"
    assert kinds["first_order"] == "boolean"
    assert kinds["occurred_at"] == "datetime"
    assert kinds["attributes"] == "object"
    assert kinds["attributes.*"] == "any"


def test_field_types_of_transaction_include_the_device() -> None:
    """field_types reaches into the nested device model."""
    kinds = field_types("transaction")
    assert kinds["device"] == "object"
    assert kinds["device.is_new"] == "boolean"
    assert kinds["device.kind"] == "string"
    assert kinds["amount"] == "number"
    assert set(kinds.values()) <= {
        "number",
        "string",
        "boolean",
        "datetime",
        "array",
        "object",
        "any",
    }


def test_field_types_match_every_model_field() -> None:
    """Every top-level model field appears in field_types, and nothing else at top level."""
    for event_type, model in EVENT_MODELS.items():
        top = {path for path in field_types(event_type) if "." not in path}
        assert top == set(model.model_fields)


def test_field_types_refuses_unknown_type() -> None:
    """An unknown event type raises KeyError naming the known ones."""
    with pytest.raises(KeyError, match="order, ticket, transaction"):
        field_types("invoice")


def test_json_schema_export_writes_the_shared_messages(tmp_path: Path) -> None:
    """write_json_schemas creates the folder and writes the JSON Schemas of the messages
    every type shares (each event type's comes from its declaration)."""
    written = write_json_schemas(tmp_path / "out")
    assert sorted(path.name for path in written) == [
        "decision.schema.json",
        "outcome.schema.json",
    ]
    for path in written:
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["type"] == "object"
        assert "properties" in schema
