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
  position in the ruleset (already sorted by ``priority``, then file order), so in
  ``stop`` mode the first matching rule is the one that fires. ``collect`` mode asserts
  the message as a *fact* instead: durable then fires every matching rule, in ``pri``
  order, and the engine retracts the fact at once.
- **Computed comparisons.** ``exists``/``missing``, ``matches`` (regex), ``contains``
  and comparisons with an arithmetic ``{expr: ...}`` are evaluated by Arbiter, not by
  durable (durable's ``$nex`` hangs as an only test; its regex dialect and arithmetic on
  missing or zero operands are not ours to define). Each distinct one gets a helper key
  ``__h<n>`` holding True/False, or left out when the field is missing (the same
  "unknown" as any comparison on a missing field); durable only tests ``$eq: true``.
  ``exists``/``missing`` are never unknown.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from app.rules.expr import Expression, evaluate
from app.rules.spec import (
    DURABLE_MAX_NUMBER,
    DURABLE_MIN_NUMBER,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Not,
    Operator,
    RuleSet,
    Scalar,
)

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
    "exists": "missing",
    "missing": "exists",
    "matches": "not_matches",
    "not_matches": "matches",
    "contains": "not_contains",
    "not_contains": "contains",
}

HELPER_PREFIX = "__h"


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


def to_expression(  # noqa: PLR0911 - one return per condition kind reads best
    condition: Condition, helpers: Mapping[Compare, str] | None = None
) -> dict[str, Any]:
    """The durable expression (the value under ``"m"``) for one condition;
    ``helpers`` names the helper key of each computed comparison (see ``helper_keys``)."""
    if isinstance(condition, Not):
        return to_expression(negate(condition.condition), helpers)
    if isinstance(condition, AllOf):
        return _join("$and", [to_expression(c, helpers) for c in condition.conditions])
    if isinstance(condition, AnyOf):
        return _join("$or", [to_expression(c, helpers) for c in condition.conditions])
    if condition.is_computed:
        helper = (helpers or {}).get(condition)
        if helper is None:
            raise ValueError(f"no helper key for the computed comparison {condition}")
        return {"$eq": {helper: True}}
    key = fact_key(condition.path)
    if condition.op in ("in", "not_in"):
        values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
        if condition.op == "in":
            return _join("$or", [{"$eq": {key: v}} for v in values])
        return _join("$and", [{"$neq": {key: v}} for v in values])
    return {_DURABLE_OPS[condition.op]: {key: condition.value}}


def to_durable(ruleset: RuleSet, name: str, *, part: slice | None = None) -> dict[str, Any]:
    """The durable_rules JSON definition ``{name: {rule_name: {...}}}`` of ``ruleset``
    (or of the rules in ``part`` of it, with the whole ruleset's helper keys).

    Each rule's action is named after the rule, so the engine learns which rule fired.
    """
    helpers = helper_keys(ruleset)
    rules: dict[str, Any] = {}
    for position, rule in enumerate(ruleset.rules[part or slice(None)]):
        rules[rule.name] = {
            "all": [{"m": to_expression(rule.when, helpers)}],
            "pri": position,
            "run": rule.name,
        }
    return {name: rules}


def _comparisons(condition: Condition) -> Iterator[Compare]:
    """Every comparison as durable sees it (``not`` already pushed down)."""
    if isinstance(condition, Compare):
        yield condition
    elif isinstance(condition, Not):
        yield from _comparisons(negate(condition.condition))
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
        if compare.is_computed:
            continue
        first = compare.value[0] if isinstance(compare.value, tuple) else compare.value
        assert not isinstance(first, Expression)
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
    write with an exponent are replaced by order-keeping stand-ins (see ``spec``)."""
    out: dict[str, Any] = {}
    for key, kind in kinds.items():
        if key in flat:
            value = _coerce(flat[key], kind)
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = _for_durable(value)
            if value is not None:
                out[key] = value
    return out


def helper_keys(ruleset: RuleSet) -> dict[Compare, str]:
    """A helper fact key (``__h1``, ``__h2``…) per distinct computed comparison."""
    keys: dict[Compare, str] = {}
    for compare in comparisons(ruleset):
        if compare.is_computed and compare not in keys:
            keys[compare] = f"{HELPER_PREFIX}{len(keys) + 1}"
    return keys


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
