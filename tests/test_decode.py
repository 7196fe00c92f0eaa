"""Unit tests of the decode stage: bytes in, a validated event or an InvalidEvent out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from app.core.decode import decode_event, describe_validation_error
from app.errors import InvalidEvent
from app.simulator.shapes import Ticket, Transaction
from tests.shipped import TYPES

LIMIT = 65_536


def order_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "ord-1",
        "occurred_at": "2026-01-31T12:00:00+01:00",
        "customer_id": "cust-00001",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": 9.99}],
        "total": 24.97,
        "currency": "USD",
        "payment_method": "card",
        "billing_country": "US",
        "shipping_country": "US",
        "first_order": False,
    }
    doc.update(changes)
    return doc


def reject(event_type: str, raw: bytes, max_bytes: int = LIMIT) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(event_type, raw, max_bytes=max_bytes, models=TYPES.models)
    return caught.value


def test_valid_order_decodes_to_its_declared_model() -> None:
    """Valid bytes become the typed event of the order's declaration, with its fields."""
    event = decode_event(
        "order", json.dumps(order_doc()).encode(), max_bytes=LIMIT, models=TYPES.models
    )
    assert isinstance(event, TYPES.models["order"])
    assert event.items[0].quantity == order_doc()["items"][0]["quantity"]  # type: ignore[attr-defined]
    assert event.partition_key == "cust-00001"
    assert event.occurred_at.utcoffset() is not None


def test_unknown_type_lists_the_known_types() -> None:
    """An unknown event type is refused naming every known type."""
    error = reject("invoice", b"{}")
    assert error.reason == "unknown_type"
    assert "order, ticket, transaction" in error.detail


def test_oversize_names_size_limit_and_setting() -> None:
    """Bytes over the limit are refused before parsing, naming both sizes and the setting."""
    error = reject("ticket", b"x" * 70_123)
    assert error.reason == "oversize"
    assert "70,123 bytes" in error.detail
    assert "65,536" in error.detail
    assert "ARBITER_MAX_EVENT_BYTES" in error.detail


def test_truncated_json_says_where() -> None:
    """Broken JSON is malformed_json with the line and column of the problem."""
    raw = json.dumps(order_doc()).encode()[:40]
    error = reject("order", raw)
    assert error.reason == "malformed_json"
    assert "line 1 column" in error.detail


def test_non_utf8_bytes_are_malformed_json() -> None:
    """Bytes that are not UTF-8 are malformed_json naming the bad byte."""
    error = reject("order", b'{"event_id": "\xff"}')
    assert error.reason == "malformed_json"
    assert "0xff" in error.detail


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[1, 2]", "array"), (b'"hi"', "string"), (b"3", "number")]
)
def test_json_that_is_not_an_object_is_refused(raw: bytes, kind: str) -> None:
    """A JSON array, string or number is not_an_object, naming what it was."""
    error = reject("transaction", raw)
    assert error.reason == "not_an_object"
    assert kind in error.detail


def test_validation_errors_name_field_and_input() -> None:
    """Validation failures name each field, the problem and a short form of the input."""
    raw = json.dumps(order_doc(total=-12.5, currency="XYZ")).encode()
    error = reject("order", raw)
    assert error.reason == "validation"
    assert "total: Input should be greater than or equal to 0 (got -12.5)" in error.detail
    assert "currency: unknown currency code 'XYZ'" in error.detail


def test_wrong_type_is_a_validation_error() -> None:
    """A string where a number belongs is a validation error on that field."""
    raw = json.dumps(order_doc(total="abc")).encode()
    error = reject("order", raw)
    assert error.reason == "validation"
    assert "total:" in error.detail
    assert "'abc'" in error.detail


def test_missing_field_is_named() -> None:
    """A missing required field is named without echoing the whole input."""
    doc = order_doc()
    del doc["customer_id"]
    error = reject("order", json.dumps(doc).encode())
    assert error.reason == "validation"
    assert error.detail == "customer_id: Field required"


def test_naive_datetime_is_a_validation_error_with_the_fix() -> None:
    """A time without an offset is refused with an example of a correct one."""
    error = reject("order", json.dumps(order_doc(occurred_at="2026-01-31T12:00:00")).encode())
    assert error.reason == "validation"
    assert "occurred_at has no timezone" in error.detail


def test_nested_error_paths_are_dotted() -> None:
    """An error inside a list item is named by its dotted path."""
    items = [{"sku": "SKU-1", "quantity": 0, "unit_price": 1.0}]
    error = reject("order", json.dumps(order_doc(items=items)).encode())
    assert "items.0.quantity:" in error.detail


def test_description_lists_five_errors_then_counts_the_rest() -> None:
    """At most five errors are listed, followed by how many more there are."""
    with pytest.raises(ValidationError) as caught:
        Ticket.model_validate_json(b"{}")
    text = describe_validation_error(caught.value)
    assert text.count(": Field required") == 5
    assert text.endswith("and 2 more")


def test_long_inputs_are_shortened_in_the_description() -> None:
    """An offending input is shown in at most 40 characters."""
    doc = {"event_id": "txn 1 " + "y" * 200}
    with pytest.raises(ValidationError) as caught:
        Transaction.model_validate(doc)
    first = describe_validation_error(caught.value).split("; ")[0]
    shown = first[first.index("(got ") + 5 : -1]
    assert len(shown) <= 40
    assert shown.endswith("...")


# --- outcomes -----------------------------------------------------------------------

OUTCOME = {
    "event_id": "txn-1",
    "event_type": "transaction",
    "partition_key": "acct-1",
    "occurred_at": "2026-03-02T10:00:00Z",
    "labels": {"fraud": True},
}


def test_a_valid_outcome_decodes_with_its_labels() -> None:
    from app.core.decode import decode_outcome

    outcome = decode_outcome("transaction", json.dumps(OUTCOME).encode(), max_bytes=65536)
    assert (outcome.event_id, outcome.labels) == ("txn-1", {"fraud": True})


@pytest.mark.parametrize(
    ("body", "reason", "fragment"),
    [
        ({**OUTCOME, "event_type": "order"}, "wrong_type", "send it to outcomes.order"),
        ({**OUTCOME, "labels": {}}, "validation", "labels"),
        ({k: v for k, v in OUTCOME.items() if k != "event_id"}, "validation", "event_id"),
        ({**OUTCOME, "labels": {"note": "x" * 70_000}}, "oversize", "send only the labels"),
    ],
)
def test_a_bad_outcome_is_refused_with_a_reason_and_the_fix(
    body: dict[str, object], reason: str, fragment: str
) -> None:
    from app.core.decode import decode_outcome
    from app.errors import InvalidEvent

    with pytest.raises(InvalidEvent) as caught:
        decode_outcome("transaction", json.dumps(body).encode(), max_bytes=65536)
    assert caught.value.reason == reason
    assert fragment in caught.value.detail
