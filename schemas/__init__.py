"""The contract of every event, decision and outcome Arbiter reads or writes.

Event types are declared in this folder's ``*.yaml`` files (``app.declarations`` reads
and compiles them; docs/events.md); here are what every event shares (``EventCore``,
``EventBase``), the ``Decision`` and ``Outcome`` messages, and the field vocabulary.
The JSON Schemas published to integrators are exported with ``arbiter schemas export``.
"""

from __future__ import annotations

from schemas.common import (
    COUNTRIES,
    CURRENCIES,
    EventBase,
    EventCore,
    FieldKind,
    model_field_kinds,
)
from schemas.decision import Decision
from schemas.outcome import EventType, Outcome

__all__ = [
    "COUNTRIES",
    "CURRENCIES",
    "Decision",
    "EventBase",
    "EventCore",
    "EventType",
    "FieldKind",
    "Outcome",
    "model_field_kinds",
]
