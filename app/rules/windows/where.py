"""The ``where`` filter of a correlation window: its value types and its evaluation.

A ``where`` is a small tree of tests (``field <op> value``) under ``all``/``any``/``not``,
read from YAML by ``app.rules.windows.parse`` and compiled once per window by
``app.rules.windows.store`` into a predicate over a nested fact
(``{**event_json, "scores": {...}}``). Evaluation is three-valued, like the rules: a
comparison on a missing field, or on a value of the wrong kind, is unknown.

Pure: no I/O.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from app.rules.language.kinds import as_number
from app.rules.language.spec import Scalar

__all__ = [
    "LIST_OPERATORS",
    "WHERE_OPERATORS",
    "Predicate",
    "Where",
    "WhereAll",
    "WhereAny",
    "WhereNot",
    "WhereOp",
    "WhereTest",
    "canonical_where",
    "compile_where",
    "path_getter",
    "scalar_kind",
    "where_holds",
]

WhereOp: TypeAlias = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "missing", "matches"
]
WHERE_OPERATORS: tuple[WhereOp, ...] = (
    *("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"),
    *("exists", "missing", "matches"),
)
LIST_OPERATORS = frozenset({"in", "not_in"})


# --- the value types -------------------------------------------------------------------


@dataclass(frozen=True)
class WhereTest:
    """``field <op> value``; ``value`` is a tuple for in/not_in, the regex text for
    ``matches`` and None for exists/missing."""

    path: str
    op: WhereOp
    value: Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True)
class WhereAll:
    """True when every condition is true."""

    conditions: tuple[Where, ...]


@dataclass(frozen=True)
class WhereAny:
    """True when at least one condition is true."""

    conditions: tuple[Where, ...]


@dataclass(frozen=True)
class WhereNot:
    """True when the condition is false; a test on a missing field stays false under
    ``not`` too, as in the rules (see ``app.rules.runtime.compile``)."""

    condition: Where


Where: TypeAlias = WhereTest | WhereAll | WhereAny | WhereNot


def canonical_where(where: Where) -> Any:
    """The plain-data form of ``where`` (what a window's fingerprint hashes)."""
    if isinstance(where, WhereTest):
        value = list(where.value) if isinstance(where.value, tuple) else where.value
        return {"field": where.path, where.op: True if where.value is None else value}
    if isinstance(where, WhereNot):
        return {"not": canonical_where(where.condition)}
    group = "all" if isinstance(where, WhereAll) else "any"
    return {group: [canonical_where(c) for c in where.conditions]}


# --- evaluating `where` (three-valued, like the rules) --------------------------------

Predicate: TypeAlias = Callable[[Mapping[str, Any]], "bool | None"]
_Getter: TypeAlias = Callable[[Mapping[str, Any]], Any]


def path_getter(path: str) -> _Getter:
    """Reads a dotted path from a nested fact; list items by index; None when absent."""
    if "." not in path:
        return lambda fact: fact.get(path)
    steps = tuple((p, int(p) if p.isdigit() else None) for p in path.split("."))

    def get(fact: Mapping[str, Any]) -> Any:
        current: Any = fact
        for name, index in steps:
            if isinstance(current, Mapping):
                current = current.get(name)
            elif index is not None and isinstance(current, list | tuple):
                current = current[index] if index < len(current) else None
            else:
                return None
            if current is None:
                return None
        return current

    return get


def scalar_kind(value: Scalar) -> str:
    """number / string / boolean; bool first, because a bool is an int."""
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else "string"


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


_COERCE: dict[str, Callable[[Any], Any]] = {
    "number": as_number,
    "string": _as_text,
    "boolean": _as_bool,
}
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _compile_test(test: WhereTest) -> Predicate:
    get = path_getter(test.path)
    if test.op == "exists":
        return lambda fact: get(fact) is not None
    if test.op == "missing":
        return lambda fact: get(fact) is None
    if test.op == "matches":
        regex = re.compile(str(test.value))

        def matches(fact: Mapping[str, Any]) -> bool | None:
            text = get(fact)
            return regex.search(text) is not None if isinstance(text, str) else None

        return matches
    values = test.value if isinstance(test.value, tuple) else (test.value,)
    coerce = _COERCE[scalar_kind(values[0])]  # type: ignore[arg-type]
    wanted = [coerce(v) for v in values]
    if test.op in LIST_OPERATORS:
        allowed = frozenset(wanted)
        inside = test.op == "in"

        def member(fact: Mapping[str, Any]) -> bool | None:
            got = coerce(get(fact))
            return None if got is None else (got in allowed) is inside

        return member
    cmp, operand = _CMP[test.op], wanted[0]

    def compare(fact: Mapping[str, Any]) -> bool | None:
        got = coerce(get(fact))
        return None if got is None else cmp(got, operand)

    return compare


def compile_where(where: Where) -> Predicate:
    if isinstance(where, WhereTest):
        return _compile_test(where)
    if isinstance(where, WhereNot):
        inner = compile_where(where.condition)

        def negated(fact: Mapping[str, Any]) -> bool | None:
            result = inner(fact)
            return None if result is None else not result

        return negated
    parts = tuple(compile_where(c) for c in where.conditions)
    if len(parts) == 1:
        return parts[0]
    # all: any False wins, else unknown wins; any: any True wins, else unknown wins.
    decisive = not isinstance(where, WhereAll)

    def group(fact: Mapping[str, Any]) -> bool | None:
        unknown = False
        for part in parts:
            result = part(fact)
            if result is decisive:
                return decisive
            if result is None:
                unknown = True
        return None if unknown else not decisive

    return group


def where_holds(where: Where | None, fact: Mapping[str, Any]) -> bool:
    """Whether ``where`` holds on a nested fact (``{**event_json, "scores": {...}}``).

    A comparison on a missing field, or on a value of the wrong kind, is unknown: it never
    holds, not even under ``not`` (as in the rules). Convenience for one-off checks; the
    store compiles each ``where`` once.
    """
    return where is None or compile_where(where)(fact) is True
