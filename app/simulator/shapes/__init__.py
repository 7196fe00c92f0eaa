"""The simulator's own models of the shipped event types (``order``, ``ticket``,
``transaction``): the simulator builds its events with them. Arbiter itself decodes
every type, the shipped ones included, through its declaration (``schemas/*.yaml``);
tests/test_declarations.py proves the two accept, refuse and dump alike.
"""

from __future__ import annotations

from functools import cache

from app.simulator.shapes.order import Order, OrderItem
from app.simulator.shapes.ticket import Ticket
from app.simulator.shapes.transaction import Device, Transaction
from schemas.common import EventBase, FieldKind, model_field_kinds

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
    "EVENT_MODELS",
    "Device",
    "Event",
    "Order",
    "OrderItem",
    "Ticket",
    "Transaction",
    "field_types",
]
