"""The rule language as typed values: what a rule file means once it has been checked.

``app.rules.loader`` turns YAML into these frozen dataclasses (and refuses bad files);
``app.rules.compile`` turns them into durable_rules definitions; ``app.rules.engine``
runs them. Nothing here does I/O.

Extension points for later versions: a new condition kind is one more dataclass in the
``Condition`` union (plus its compile rule); per-rule priorities, ``collect`` mode and
actions become new fields on ``Rule`` with defaults, so existing rule files and callers
keep working.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

Operator: TypeAlias = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"]
OPERATORS: tuple[Operator, ...] = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in")
ORDERING_OPERATORS: frozenset[str] = frozenset({"gt", "gte", "lt", "lte"})
LIST_OPERATORS: frozenset[str] = frozenset({"in", "not_in"})

Scalar: TypeAlias = str | int | float | bool

SCORES_PREFIX = "scores."


@dataclass(frozen=True)
class SourceRef:
    """Where something was written: the file and 1-based line (None when unknown)."""

    file: str
    line: int | None


@dataclass(frozen=True)
class Compare:
    """``field <op> value``: ``path`` is dotted (``device.is_new``, ``items.0.sku``,
    ``scores.fraud``); ``value`` is a tuple for ``in``/``not_in``, a scalar otherwise."""

    path: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]

    @property
    def is_score(self) -> bool:
        return self.path.startswith(SCORES_PREFIX)


@dataclass(frozen=True)
class AllOf:
    """True when every condition is true."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """True when at least one condition is true."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """True when the condition is false — except that a comparison on a missing field
    stays false under ``not`` too (see ``app.rules.compile`` for why)."""

    condition: Condition


Condition: TypeAlias = Compare | AllOf | AnyOf | Not


@dataclass(frozen=True)
class Rule:
    """One named rule: when ``when`` holds, the decision is ``decision`` because ``reason``."""

    name: str
    when: Condition
    decision: str
    reason: str
    source: SourceRef


@dataclass(frozen=True)
class RuleSet:
    """Every rule for one event type, in evaluation order (first match wins).

    ``version`` is a short hash of the canonical content (not of formatting, comments or
    file names), so reloading unchanged rules keeps the version; ``files`` lists the
    files the rules came from, in merge order.
    """

    event_type: str
    rules: tuple[Rule, ...]
    default_decision: str
    default_reason: str
    version: str
    files: tuple[str, ...]


def canonical_condition(condition: Condition) -> Any:
    """A JSON-able form of ``condition`` that is equal exactly when meanings are
    written identically (used for the version hash and for unreachable-rule checks)."""
    if isinstance(condition, Compare):
        value: Any = condition.value
        if isinstance(value, tuple):
            value = list(value)
        return {"field": condition.path, condition.op: value}
    if isinstance(condition, AllOf):
        return {"all": [canonical_condition(c) for c in condition.conditions]}
    if isinstance(condition, AnyOf):
        return {"any": [canonical_condition(c) for c in condition.conditions]}
    return {"not": canonical_condition(condition.condition)}


def ruleset_version(
    event_type: str,
    rules: tuple[Rule, ...],
    default_decision: str,
    default_reason: str,
) -> str:
    """Short sha256 of the canonical content of a ruleset."""
    content = {
        "ruleset": event_type,
        "default": {"decision": default_decision, "reason": default_reason},
        "rules": [
            {
                "name": rule.name,
                "when": canonical_condition(rule.when),
                "decision": rule.decision,
                "reason": rule.reason,
            }
            for rule in rules
        ],
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
