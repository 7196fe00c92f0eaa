"""Turn facts into the messages a compiled ruleset reads: flat keys, checked kinds, helpers.

A fact is ``{**event_json, "scores": {...}}`` (plus ``"windows": {...}`` when the ruleset
declares windows). ``build_message`` flattens it to the keys ``app.rules.runtime.compile``
named, keeps each value only if it is of the kind the rules compare it with, replaces
numbers durable_rules cannot parse by order-keeping stand-ins, and adds the helper keys
of the comparisons Arbiter computes itself (presence, regex, ``contains``, arithmetic).
The reasons are in ``app.rules.runtime.compile``'s docstring.

Pure: no I/O, no durable_rules.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from app.rules.language.expr import Expression, evaluate
from app.rules.language.kinds import KEY_SEPARATOR, ValueKind, as_number, value_kind
from app.rules.language.spec import DURABLE_MAX_NUMBER, DURABLE_MIN_NUMBER, Compare, RuleSet, Scalar
from app.rules.runtime.compile import helper_keys, key_kinds


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if value is None:
        # null and absent mean the same to a rule: no comparison matches.
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}{KEY_SEPARATOR}{key}" if prefix else str(key), item, out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(f"{prefix}{KEY_SEPARATOR}{index}", item, out)
    else:
        out[prefix] = value


def flatten_facts(event: Mapping[str, Any], scores: Mapping[str, float | str]) -> dict[str, Any]:
    """One flat fact from a JSON-dumped event and its model scores.

    ``{"device": {"is_new": True}, "items": [{"sku": "A"}]}`` + ``{"fraud": 0.2}`` →
    ``{"device__is_new": True, "items__0__sku": "A", "scores__fraud": 0.2}``. Null values
    are left out. A ``scores`` key inside ``event`` is ignored in favour of ``scores``.
    """
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key != "scores":
            _flatten(str(key), value, out)
    _flatten("scores", dict(scores), out)
    return out


def _coerce(value: Any, kind: ValueKind) -> Any | None:
    if kind == "number":
        return as_number(value)
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def _for_durable(number: float) -> float:
    """A stand-in durable can parse that orders like ``number`` against every operand
    durable holds (0, or DURABLE_MIN_NUMBER <= |operand| < DURABLE_MAX_NUMBER)."""
    magnitude = abs(number)
    if number == 0 or DURABLE_MIN_NUMBER / 10 <= magnitude < DURABLE_MAX_NUMBER:
        return number
    stand_in = DURABLE_MIN_NUMBER / 10 if magnitude < 1 else DURABLE_MAX_NUMBER * 9
    return math.copysign(stand_in, number)


def prepare_fact(flat: Mapping[str, Any], kinds: Mapping[str, ValueKind]) -> dict[str, Any]:
    """The message to post: only the keys the rules read, each of the kind it is compared
    with; a value of another kind is dropped (treated as missing). Numbers JSON would
    write with an exponent are replaced by order-keeping stand-ins (see
    ``app.rules.language.spec``)."""
    out: dict[str, Any] = {}
    for key, kind in kinds.items():
        if key in flat:
            value = _coerce(flat[key], kind)
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = _for_durable(value)
            if value is not None:
                out[key] = value
    return out


def lookup(fact: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in a nested fact (list items by index), or None."""
    value: Any = fact
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list | tuple) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else None
        else:
            return None
        if value is None:
            return None
    return value


def number_at(fact: Mapping[str, Any], path: str) -> float | int | None:
    """The number at ``path`` (numeric strings converted), or None."""
    value = _coerce(lookup(fact, path), "number")
    return value if isinstance(value, int | float) else None


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _same(item: Any, wanted: Scalar) -> bool:
    """Equality that keeps kinds apart (True is not 1, "1" is not 1)."""
    if isinstance(wanted, bool) or isinstance(item, bool):
        return isinstance(wanted, bool) and isinstance(item, bool) and item is wanted
    if isinstance(wanted, int | float):
        return isinstance(item, int | float) and item == wanted
    return isinstance(item, str) and item == wanted


Helper: TypeAlias = Callable[[Mapping[str, Any]], "bool | None"]


def helper(compare: Compare) -> Helper:
    """The function computing one helper key from a nested fact: True, False, or None
    (unknown: the key is left out, so neither the comparison nor its negation matches)."""
    op, path, wanted = compare.op, compare.path, compare.value
    if op in ("exists", "missing"):
        expect_present = op == "exists"
        return lambda fact: (lookup(fact, path) is not None) is expect_present
    if isinstance(wanted, Expression):
        test = _ORDER[op]
        tree = wanted.tree

        def arithmetic(fact: Mapping[str, Any]) -> bool | None:
            left = number_at(fact, path)
            if left is None:
                return None
            right = evaluate(tree, lambda p: number_at(fact, p))
            return None if right is None else test(left, right)

        return arithmetic
    if op in _ORDER or op in ("in", "not_in"):
        return _plain(compare)
    positive = op in ("matches", "contains")
    if op in ("matches", "not_matches"):
        pattern = re.compile(str(wanted))

        def matches(fact: Mapping[str, Any]) -> bool | None:
            value = lookup(fact, path)
            if not isinstance(value, str):
                return None
            return (pattern.search(value) is not None) is positive

        return matches
    assert not isinstance(wanted, tuple)

    def contains(fact: Mapping[str, Any]) -> bool | None:
        value = lookup(fact, path)
        if isinstance(value, str) and isinstance(wanted, str):
            return (wanted in value) is positive
        if isinstance(value, list | tuple):
            return any(_same(item, wanted) for item in value) is positive
        return None

    return contains


def _plain(compare: Compare) -> Helper:
    """An ordinary comparison evaluated by Arbiter (its operand is out of durable's range)."""
    op, path = compare.op, compare.path
    wanted = compare.value if isinstance(compare.value, tuple) else (compare.value,)
    kind = value_kind(wanted[0]) if not isinstance(wanted[0], Expression) else "number"

    def plain(fact: Mapping[str, Any]) -> bool | None:
        value = _coerce(lookup(fact, path), kind)
        if value is None:
            return None
        if op in ("in", "not_in"):
            hit = any(_same(value, w) for w in wanted if not isinstance(w, Expression))
            return hit if op == "in" else not hit
        (operand,) = wanted
        if isinstance(operand, Expression):
            return None
        return _ORDER[op](value, operand)

    return plain


@dataclass(frozen=True)
class FactPlan:
    """How to turn a fact into the message a ruleset reads: the plain keys and the kind
    each is compared with, and the helper keys with the functions computing them."""

    kinds: Mapping[str, ValueKind]
    helpers: Mapping[str, Helper]


def fact_plan(ruleset: RuleSet) -> FactPlan:
    """The ``FactPlan`` of ``ruleset`` (helper keys match ``to_durable``'s)."""
    return FactPlan(
        kinds=key_kinds(ruleset),
        helpers={key: helper(compare) for compare, key in helper_keys(ruleset).items()},
    )


def build_message(fact: Mapping[str, Any], plan: FactPlan) -> dict[str, Any]:
    """The message to post for one fact (``{**event_json, "scores": {...}}``, optionally
    ``"windows": {...}``): the plain keys the rules read plus every known helper key."""
    message = prepare_fact(flatten_facts(fact, fact.get("scores") or {}), plan.kinds)
    for key, compute in plan.helpers.items():
        value = compute(fact)
        if value is not None:
            message[key] = value
    return message
