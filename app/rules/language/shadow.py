"""Does one condition imply another? Used to find rules that can never fire in ``stop``
mode because a rule that comes first matches whenever they do.

Sound, not complete: ``implies(a, b)`` True means every event matching ``a`` matches
``b``; False means "not shown". Under the three-valued reading of missing fields, a
comparison that implies another does so for missing fields too (both are unknown).
"""

from __future__ import annotations

from app.rules.language.spec import AllOf, AnyOf, Compare, Condition, canonical_condition

_LOWER = frozenset({"gt", "gte"})
_UPPER = frozenset({"lt", "lte"})


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _compare_implies(a: Compare, b: Compare) -> bool:  # noqa: PLR0911 - a case table
    """``a`` ⇒ ``b`` for two comparisons on the same field."""
    if a == b:
        return True
    if a.path != b.path or a.is_computed or b.is_computed:
        return False
    if b.op in _LOWER | _UPPER:
        bound = _number(b.value)
        if bound is None:
            return False
        if a.op == "eq":
            value = _number(a.value)
            return value is not None and _holds(value, b.op, bound)
        if (a.op in _LOWER and b.op in _LOWER) or (a.op in _UPPER and b.op in _UPPER):
            mine = _number(a.value)
            if mine is None:
                return False
            if mine == bound:
                # gte 5 does not imply gt 5; everything else at the same bound does.
                return not (a.op in ("gte", "lte") and b.op in ("gt", "lt"))
            return mine > bound if b.op in _LOWER else mine < bound
        return False
    if b.op == "in" and isinstance(b.value, tuple):
        if a.op == "eq":
            return a.value in b.value
        if a.op == "in" and isinstance(a.value, tuple):
            return set(a.value) <= set(b.value)
    if b.op == "not_in" and isinstance(b.value, tuple) and a.op == "not_in":
        return isinstance(a.value, tuple) and set(b.value) <= set(a.value)
    return False


def _holds(value: float, op: str, bound: float) -> bool:
    return {
        "gt": value > bound,
        "gte": value >= bound,
        "lt": value < bound,
        "lte": value <= bound,
    }[op]


def implies(a: Condition, b: Condition) -> bool:  # noqa: PLR0911 - one return per shape
    """True when every event that matches ``a`` also matches ``b`` (as far as shown)."""
    if canonical_condition(a) == canonical_condition(b):
        return True
    if isinstance(b, AllOf):
        return all(implies(a, part) for part in b.conditions)
    if isinstance(a, AnyOf):
        return all(implies(part, b) for part in a.conditions)
    if isinstance(b, AnyOf):
        return any(implies(a, part) for part in b.conditions)
    if isinstance(a, AllOf):
        return any(implies(part, b) for part in a.conditions)
    if isinstance(a, Compare) and isinstance(b, Compare):
        return _compare_implies(a, b)
    return False
