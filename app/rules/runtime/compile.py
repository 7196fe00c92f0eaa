"""Compile checked rules into durable_rules definitions.

Pure: plain data in, plain data out; ``app.rules.runtime.facts`` turns events into the
messages these definitions read, and ``app.rules.runtime.engine`` is the only module that
talks to durable_rules. How the rule language maps onto durable (measured on 2.0.28; the
durable behaviour it works around is in ``docs/dependencies.md``, durable_rules):

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

from collections.abc import Iterator, Mapping
from typing import Any

from app.rules.language.expr import Expression
from app.rules.language.kinds import ValueKind, fact_key, value_kind
from app.rules.language.spec import AllOf, AnyOf, Compare, Condition, Not, Operator, RuleSet

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


def helper_keys(ruleset: RuleSet) -> dict[Compare, str]:
    """A helper fact key (``__h1``, ``__h2``…) per distinct computed comparison."""
    keys: dict[Compare, str] = {}
    for compare in comparisons(ruleset):
        if compare.is_computed and compare not in keys:
            keys[compare] = f"{HELPER_PREFIX}{len(keys) + 1}"
    return keys
