"""Compile checked rules into durable_rules definitions, and events into facts for them.

Pure: plain data in, plain data out; ``app.rules.engine`` is the only caller that talks
to durable_rules. How the rule language maps onto durable (measured on 2.0.28):

- Paths are flattened: ``device.is_new`` → key ``device__is_new``, ``items.0.sku`` →
  ``items__0__sku``, ``scores.fraud`` → ``scores__fraud``. durable cannot index lists,
  and one flat level keeps posted messages small.
- ``eq/ne/gt/gte/lt/lte`` → ``$eq/$neq/$gt/$gte/$lt/$lte``; ``in`` → ``$or`` of ``$eq``;
  ``not_in`` → ``$and`` of ``$neq``; ``all``/``any`` → ``$and``/``$or``.
- **Missing fields.** A field that is absent or null never satisfies a comparison — not
  even ``ne`` or ``not_in`` — and ``not`` does not turn that into a match (SQL-style
  three-valued logic: a comparison on a missing field is "unknown", and ``not unknown``
  is still unknown). ``not`` is pushed down to the comparisons with De Morgan's laws
  (``not gt`` → ``lte``, ``not in`` → ``not_in``), which is exact under that logic. We
  never emit durable's ``$nex``: a rule whose only test is ``$nex`` (alone or as an
  ``$or`` branch) makes durable 2.0.28 loop forever inside ``post``.
- **Types.** durable orders any string above any number (``"900" > 1000`` matches) and
  treats ``1``/``"true"`` as equal to ``true``. The loader type-checks every comparison
  against the event schema; at run time ``prepare_fact`` additionally keeps only values
  of the kind each key is compared with (numeric strings such as JSON-dumped decimals
  become floats; anything else of the wrong kind is treated as missing).
- **Order.** durable fires one action per posted message: the pending rule with the
  lowest ``pri``, then the first in definition order. Each rule gets ``pri`` = its
  position, so the first matching rule in file order is the one that fires.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeAlias

from app.rules.spec import AllOf, AnyOf, Compare, Condition, Not, Operator, RuleSet, Scalar

ValueKind: TypeAlias = Literal["number", "string", "boolean"]

KEY_SEPARATOR = "__"

_DURABLE_OPS: dict[str, str] = {
    "eq": "$eq",
    "ne": "$neq",
    "gt": "$gt",
    "gte": "$gte",
    "lt": "$lt",
    "lte": "$lte",
}

_NEGATED: dict[Operator, Operator] = {
    "eq": "ne",
    "ne": "eq",
    "gt": "lte",
    "gte": "lt",
    "lt": "gte",
    "lte": "gt",
    "in": "not_in",
    "not_in": "in",
}


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


def negate(condition: Condition) -> Condition:
    """``not condition`` without a ``Not`` node (De Morgan, then flip each comparison)."""
    if isinstance(condition, Compare):
        return Compare(condition.path, _NEGATED[condition.op], condition.value)
    if isinstance(condition, AllOf):
        return AnyOf(tuple(negate(c) for c in condition.conditions))
    if isinstance(condition, AnyOf):
        return AllOf(tuple(negate(c) for c in condition.conditions))
    return condition.condition


def _join(op: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {op: parts}


def to_expression(condition: Condition) -> dict[str, Any]:
    """The durable expression (the value under ``"m"``) for one condition."""
    if isinstance(condition, Not):
        return to_expression(negate(condition.condition))
    if isinstance(condition, AllOf):
        return _join("$and", [to_expression(c) for c in condition.conditions])
    if isinstance(condition, AnyOf):
        return _join("$or", [to_expression(c) for c in condition.conditions])
    key = fact_key(condition.path)
    if condition.op in ("in", "not_in"):
        values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
        if condition.op == "in":
            return _join("$or", [{"$eq": {key: v}} for v in values])
        return _join("$and", [{"$neq": {key: v}} for v in values])
    return {_DURABLE_OPS[condition.op]: {key: condition.value}}


def to_durable(ruleset: RuleSet, name: str) -> dict[str, Any]:
    """The durable_rules JSON definition ``{name: {rule_name: {...}}}`` of ``ruleset``.

    Each rule's action is named after the rule, so the engine learns which rule fired.
    """
    rules: dict[str, Any] = {}
    for position, rule in enumerate(ruleset.rules):
        rules[rule.name] = {
            "all": [{"m": to_expression(rule.when)}],
            "pri": position,
            "run": rule.name,
        }
    return {name: rules}


def _comparisons(condition: Condition) -> Iterator[Compare]:
    if isinstance(condition, Compare):
        yield condition
    elif isinstance(condition, Not):
        yield from _comparisons(condition.condition)
    else:
        for child in condition.conditions:
            yield from _comparisons(child)


def comparisons(ruleset: RuleSet) -> Iterator[Compare]:
    """Every comparison in every rule of ``ruleset``, in order."""
    for rule in ruleset.rules:
        yield from _comparisons(rule.when)


def key_kinds(ruleset: RuleSet) -> dict[str, ValueKind]:
    """The fact keys ``ruleset`` reads and the kind each is compared with.

    The loader refuses a ruleset that compares one field with two kinds, so the first
    operand seen decides.
    """
    kinds: dict[str, ValueKind] = {}
    for compare in comparisons(ruleset):
        first = compare.value[0] if isinstance(compare.value, tuple) else compare.value
        kinds.setdefault(fact_key(compare.path), value_kind(first))
    return kinds


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
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            number: float | int = value
        elif isinstance(value, str):
            # JSON-dumped Decimals arrive as strings ("2500.00").
            try:
                number = float(value)
            except ValueError:
                return None
        else:
            return None
        return number if math.isfinite(number) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def prepare_fact(flat: Mapping[str, Any], kinds: Mapping[str, ValueKind]) -> dict[str, Any]:
    """The message to post: only the keys the rules read, each of the kind it is compared
    with; a value of another kind is dropped (treated as missing)."""
    out: dict[str, Any] = {}
    for key, kind in kinds.items():
        if key in flat:
            value = _coerce(flat[key], kind)
            if value is not None:
                out[key] = value
    return out
