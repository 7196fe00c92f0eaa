"""Feature functions: validated events in, plain numbers out. Pure: no I/O, no sklearn.

One function per event type turns a *batch* of events into a row-major list of floats
whose column order is the type's ``*_FEATURES`` tuple. The tuple is stored with every
model artifact, so a model is never fed columns in an order it was not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC

from schemas import Order, Ticket, Transaction

TX_CHANNELS = ("card_present", "online", "mobile_app", "atm", "transfer")
TX_CATEGORIES = (
    "grocery",
    "electronics",
    "travel",
    "gambling",
    "digital_goods",
    "restaurants",
    "fuel",
    "jewelry",
    "money_transfer",
)
DEVICE_KINDS = ("mobile", "desktop", "pos", "atm", "unknown")
PAYMENT_METHODS = ("card", "paypal", "bank_transfer", "gift_card", "crypto", "cash_on_delivery")

TRANSACTION_FEATURES: tuple[str, ...] = (
    "log_amount",
    "is_foreign",
    "device_is_new",
    "is_night",
    *(f"channel={c}" for c in TX_CHANNELS),
    *(f"category={c}" for c in TX_CATEGORIES),
    "category=other",
    *(f"device={d}" for d in DEVICE_KINDS),
)

ORDER_FEATURES: tuple[str, ...] = (
    "log_total",
    "n_lines",
    "total_quantity",
    "max_quantity",
    "log_max_unit_price",
    "billing_ne_shipping",
    "first_order",
    "is_night",
    *(f"payment={p}" for p in PAYMENT_METHODS),
)


def _one_hot(value: str, vocabulary: Sequence[str]) -> list[float]:
    return [1.0 if value == v else 0.0 for v in vocabulary]


def transaction_row(tx: Transaction) -> list[float]:
    hour = tx.occurred_at.astimezone(UTC).hour
    category = tx.merchant_category
    return [
        math.log1p(tx.amount),
        float(tx.country != tx.card_country),
        float(tx.device.is_new),
        float(hour < 6),
        *_one_hot(tx.channel, TX_CHANNELS),
        *_one_hot(category, TX_CATEGORIES),
        float(category not in TX_CATEGORIES),
        *_one_hot(tx.device.kind, DEVICE_KINDS),
    ]


def order_row(order: Order) -> list[float]:
    quantities = [item.quantity for item in order.items]
    hour = order.occurred_at.astimezone(UTC).hour
    return [
        math.log1p(order.total),
        float(len(order.items)),
        float(sum(quantities)),
        float(max(quantities)),
        math.log1p(max(item.unit_price for item in order.items)),
        float(order.billing_country != order.shipping_country),
        float(order.first_order),
        float(hour < 6),
        *_one_hot(order.payment_method, PAYMENT_METHODS),
    ]


def ticket_text(ticket: Ticket) -> str:
    """The text the ticket models read: subject and body, subject first (it is the summary)."""
    return f"{ticket.subject}\n{ticket.body}"


def transaction_matrix(events: Sequence[Transaction]) -> list[list[float]]:
    return [transaction_row(e) for e in events]


def order_matrix(events: Sequence[Order]) -> list[list[float]]:
    return [order_row(e) for e in events]
