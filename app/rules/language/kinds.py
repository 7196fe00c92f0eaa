"""The kinds of values rules compare, and the flat key each field path becomes.

A rule operand is a number, a string or a boolean (``value_kind``); the checker refuses
a field compared with two kinds, because at run time the field is read as one kind
(``app.rules.runtime.facts``). ``fact_key`` is the flat key a dotted path becomes in the
message durable_rules reads (``device.is_new`` → ``device__is_new``). ``as_number`` is
how rules and correlation windows alike read a number from an event field.

Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeAlias

from app.rules.language.spec import Scalar

ValueKind: TypeAlias = Literal["number", "string", "boolean"]


KEY_SEPARATOR = "__"


def fact_key(path: str) -> str:
    """The flat fact key of a dotted rule path (``device.is_new`` → ``device__is_new``)."""
    return path.replace(".", KEY_SEPARATOR)


def value_kind(value: Scalar) -> ValueKind:
    """The kind of a rule operand; bool is checked first because bool is an int."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def as_number(value: Any) -> float | int | None:
    """A finite number (ints stay ints), or None; booleans are not numbers, numeric
    strings are (JSON-dumped Decimals arrive as strings: "2500.00"). Shared by rule
    evaluation and correlation windows so both read a field the same way."""
    if type(value) is float:  # the common case first: this runs per field per event
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
