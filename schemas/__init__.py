"""The contract of every event, decision and outcome Arbiter reads or writes.

Import from here: ``from schemas import Transaction, EVENT_MODELS, field_types``.
The JSON Schemas published to integrators are exported from these models
(:mod:`schemas.export`).
"""

from __future__ import annotations

from functools import cache

from schemas.common import (
    COUNTRIES,
    CURRENCIES,
    EventBase,
    EventCore,
    FieldKind,
    model_field_kinds,
)
from schemas.decision import Decision
from schemas.order import Order, OrderItem
from schemas.outcome import EventType, Outcome
from schemas.ticket import Ticket
from schemas.transaction import Device, Transaction

Event = Order | Ticket | Transaction

EVENT_MODELS: dict[str, type[EventBase]] = {
    "order": Order,
    "ticket": Ticket,
    "transaction": Transaction,
}


def field_types(event_type: str) -> dict[str, FieldKind]:
    """Every dotted field path of the ``event_type`` model mapped to its kind.

    Kinds are ``number``, ``string``, ``boolean``, ``datetime``, ``array``, ``object``
    and ``any``; list items and mapping values use ``*`` (``items.*.sku``,
    ``attributes.*``). Raises ``KeyError`` naming the known types for an unknown one.
    """
    return dict(_field_types(event_type))


@cache
def _field_types(event_type: str) -> dict[str, FieldKind]:
    model = EVENT_MODELS.get(event_type)
    if model is None:
        raise KeyError(
            f"unknown event type {event_type!r}; known types are {', '.join(EVENT_MODELS)}"
        )
    return model_field_kinds(model)


__all__ = [
    "COUNTRIES",
    "CURRENCIES",
    "EVENT_MODELS",
    "Decision",
    "Device",
    "Event",
    "EventBase",
    "EventCore",
    "EventType",
    "FieldKind",
    "Order",
    "OrderItem",
    "Outcome",
    "Ticket",
    "Transaction",
    "field_types",
]
