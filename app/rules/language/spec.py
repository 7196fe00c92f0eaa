"""The rule language as typed values: what a rule file means once it has been checked.

``app.rules.loader`` turns YAML into these frozen dataclasses (and refuses bad files);
``app.rules.runtime.compile`` turns them into durable_rules definitions;
``app.rules.runtime.engine`` runs them. Nothing here does I/O.

A new condition kind is one more operator (plus its compile rule); a new action is one
more dataclass in the ``Action`` union. Fields added to ``Rule``/``RuleSet`` get
defaults, so existing callers keep working.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from app.rules.language.expr import Expression

Operator: TypeAlias = Literal[
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "exists",
    "missing",
    "matches",
    "contains",
    # Only produced by pushing ``not`` down; never written in a rule file.
    "not_matches",
    "not_contains",
]
# The operators a rule file may use, in the order messages list them.
OPERATORS: tuple[Operator, ...] = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "exists",
    "missing",
    "matches",
    "contains",
)
ORDERING_OPERATORS: frozenset[str] = frozenset({"gt", "gte", "lt", "lte"})
LIST_OPERATORS: frozenset[str] = frozenset({"in", "not_in"})
PRESENCE_OPERATORS: frozenset[str] = frozenset({"exists", "missing"})
# Operators that may take ``{expr: "..."}`` as their operand.
EXPRESSION_OPERATORS: frozenset[str] = frozenset({"eq", "ne", "gt", "gte", "lt", "lte"})
# Comparisons durable_rules cannot do safely; Arbiter evaluates them into helper keys.
COMPUTED_OPERATORS: frozenset[str] = frozenset(
    {"exists", "missing", "matches", "contains", "not_matches", "not_contains"}
)

Scalar: TypeAlias = str | int | float | bool
Mode: TypeAlias = Literal["stop", "collect"]
MODES: tuple[Mode, ...] = ("stop", "collect")

SCORES_PREFIX = "scores."
WINDOWS_PREFIX = "windows."


@dataclass(frozen=True)
class SourceRef:
    """Where something was written: the file and 1-based line (None when unknown)."""

    file: str
    line: int | None


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong with the rule files; ``message`` says what and how to fix it."""

    file: str
    line: int | None
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.rule is not None:
            return f"{where} rule '{self.rule}': {self.message}"
        return f"{where}: {self.message}"


# durable_rules 2.0.28's JSON parser refuses numbers written with an exponent (Python
# writes 5e-06 and 1e+16 that way). Rule operands outside this range are compared by
# Arbiter instead (``Compare.is_computed``); ``app.rules.runtime.facts`` moves message values
# outside it to stand-ins that keep every comparison with in-range operands exact.
DURABLE_MIN_NUMBER = 1e-3
DURABLE_MAX_NUMBER = 1e15


def durable_safe(value: object) -> bool:
    """True when durable can be handed ``value`` as a rule operand."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    return value == 0 or DURABLE_MIN_NUMBER <= abs(value) < DURABLE_MAX_NUMBER


@dataclass(frozen=True)
class Compare:
    """``field <op> value``: ``path`` is dotted (``device.is_new``, ``items.0.sku``,
    ``scores.fraud``, ``windows.tx_count_10m``); ``value`` is a tuple for
    ``in``/``not_in``, an ``Expression`` for arithmetic, ``True`` for
    ``exists``/``missing``, a regex text for ``matches``, a scalar otherwise."""

    path: str
    op: Operator
    value: Scalar | tuple[Scalar, ...] | Expression

    @property
    def is_score(self) -> bool:
        return self.path.startswith(SCORES_PREFIX)

    @property
    def is_computed(self) -> bool:
        """True when Arbiter, not durable, evaluates it (into a helper fact key)."""
        if self.op in COMPUTED_OPERATORS or isinstance(self.value, Expression):
            return True
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        return not all(durable_safe(v) for v in values)


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
    stays false under ``not`` too (see ``app.rules.runtime.compile`` for why)."""

    condition: Condition


Condition: TypeAlias = Compare | AllOf | AnyOf | Not


@dataclass(frozen=True)
class Publish:
    """Publish the decision to a Kafka topic."""

    topic: str


@dataclass(frozen=True)
class Webhook:
    """Call a named webhook connector (connectors are configured elsewhere)."""

    name: str


@dataclass(frozen=True)
class SetValues:
    """Set output fields on the decision (e.g. ``queue``, ``priority``); pairs keep file order."""

    values: tuple[tuple[str, Scalar], ...]


@dataclass(frozen=True)
class Tag:
    """Attach labels to the decision."""

    tags: tuple[str, ...]


Action: TypeAlias = Publish | Webhook | SetValues | Tag


@dataclass(frozen=True)
class Rule:
    """One named rule: when ``when`` holds, it decides ``decision`` (None: an action-only
    rule, collect mode only) and contributes ``actions``; ``reason`` is a template whose
    ``{path}`` placeholders are filled from the event. Higher ``priority`` goes first."""

    name: str
    when: Condition
    decision: str | None
    reason: str
    source: SourceRef
    priority: int = 0
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    """Every rule for one event type, in evaluation order (priority high→low, then file
    order; tables after the rules of their file).

    ``mode`` is ``stop`` (the first matching rule decides, only it fires) or ``collect``
    (every matching rule fires). ``version`` is a short hash of the canonical content
    (not of formatting, comments, line numbers or file names). ``windows`` holds the
    ``app.rules.windows.WindowSpec`` values declared in the files.
    """

    event_type: str
    rules: tuple[Rule, ...]
    default_decision: str
    default_reason: str
    version: str
    files: tuple[str, ...]
    mode: Mode = "stop"
    windows: tuple[Any, ...] = ()
    # Paths that reasons print and the schema says are numbers (JSON-dumped decimals
    # arrive as strings and are shown as numbers); derived, so not part of ``version``.
    numeric_paths: frozenset[str] = frozenset()


def canonical_condition(condition: Condition) -> Any:
    """A JSON-able form of ``condition`` that is equal exactly when meanings are
    written identically (used for the version hash and for unreachable-rule checks)."""
    if isinstance(condition, Compare):
        value: Any = condition.value
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Expression):
            value = {"expr": value.canonical}
        return {"field": condition.path, condition.op: value}
    if isinstance(condition, AllOf):
        return {"all": [canonical_condition(c) for c in condition.conditions]}
    if isinstance(condition, AnyOf):
        return {"any": [canonical_condition(c) for c in condition.conditions]}
    return {"not": canonical_condition(condition.condition)}


def canonical_action(action: Action) -> Any:
    """A JSON-able form of one action (also the shape results carry)."""
    if isinstance(action, Publish):
        return {"type": "publish", "topic": action.topic}
    if isinstance(action, Webhook):
        return {"type": "webhook", "name": action.name}
    if isinstance(action, SetValues):
        return {"type": "set", "values": dict(action.values)}
    return {"type": "tag", "tags": list(action.tags)}


def _canonical_window(spec: Any) -> Any:
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        data = dataclasses.asdict(spec)
        data.pop("source", None)  # where it was written is not what it means
        return data
    return repr(spec)


def _canonical_rule(rule: Rule) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": rule.name,
        "when": canonical_condition(rule.when),
        "decision": rule.decision,
        "reason": rule.reason,
    }
    # Left out at their defaults so files written before they existed keep their version.
    if rule.priority:
        data["priority"] = rule.priority
    if rule.actions:
        data["actions"] = [canonical_action(a) for a in rule.actions]
    return data


def ruleset_version(
    event_type: str,
    rules: tuple[Rule, ...],
    default_decision: str,
    default_reason: str,
    mode: Mode = "stop",
    windows: tuple[Any, ...] = (),
) -> str:
    """Short sha256 of the canonical content of a ruleset."""
    content = {
        "ruleset": event_type,
        "default": {"decision": default_decision, "reason": default_reason},
        "rules": [_canonical_rule(rule) for rule in rules],
    }
    if mode != "stop":
        content["mode"] = mode
    if windows:
        content["windows"] = [_canonical_window(w) for w in windows]
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
