"""Checking conditions: YAML condition mappings → ``Condition`` values, or problems.

The part of the rule checker that knows the operators, the event field tables, the
score tables and declared windows. ``app.rules.loader`` builds on it for files, rules,
tables and actions. Every problem names the file, the line, the rule and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from app.declarations.yamlsrc import LineMap, describe, did_you_mean, key_line, line_of
from app.rules.language.expr import Expression, ExpressionError, parse_expression
from app.rules.language.kinds import ValueKind, fact_key, value_kind
from app.rules.language.spec import (
    EXPRESSION_OPERATORS,
    LIST_OPERATORS,
    OPERATORS,
    ORDERING_OPERATORS,
    PRESENCE_OPERATORS,
    SCORES_PREFIX,
    WINDOWS_PREFIX,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Not,
    Operator,
    RuleProblem,
    Scalar,
    SourceRef,
)

GROUP_KEYS = ("all", "any", "not")
COMPARE_KEYS = ("field", *OPERATORS)
MAX_REGEX_LENGTH = 500

_INDEX_RE = re.compile(r"^\d+$")

# Field kind -> (operand kind it needs, how to say so); "any" takes every scalar.
_EXPECTED: dict[str, tuple[ValueKind, str]] = {
    "number": ("number", "a number like 1000"),
    "string": ("string", "text"),
    "boolean": ("boolean", "true or false"),
}


class Invalid(Exception):
    """Raised after a problem is recorded, to abandon the enclosing condition/file."""


@dataclass
class CondContext:
    """Where a condition sits: for messages and for the one-kind-per-field check."""

    file: str
    event_type: str
    rule: str | None
    kinds: dict[str, tuple[ValueKind, str]]


@dataclass(frozen=True)
class _Operand:
    """Where an operand sits, for its checks and messages."""

    ctx: CondContext
    path: str
    op: Operator
    kind: str
    line: int


def field_kind(fields: Mapping[str, str], path: str) -> str | None:
    """The kind of an event field path: ``items.0.sku`` matches ``items.*.sku``; a table
    entry ending in ``.*`` (``attributes.*``) matches any path below it."""
    parts = path.split(".")
    if any(not p for p in parts):
        return None
    pattern = ".".join("*" if _INDEX_RE.match(p) else p for p in parts)
    if pattern in fields:
        return fields[pattern]
    for length in range(len(parts) - 1, 0, -1):
        prefix = ".".join("*" if _INDEX_RE.match(p) else p for p in parts[:length])
        wildcard = fields.get(f"{prefix}.*")
        if wildcard is not None and wildcard not in ("array", "object"):
            return wildcard
    return None


class ConditionChecks:
    """Collects problems while turning parsed YAML conditions into spec values."""

    def __init__(
        self,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.field_types = field_types
        self.score_types = score_types
        self.problems: list[RuleProblem] = []
        # Per event type: fact key -> (operand kind, rule) — one field, one kind of value.
        self.kinds: dict[str, dict[str, tuple[ValueKind, str]]] = {}
        # Per event type: declared window name -> where it was declared.
        self.windows: dict[str, dict[str, SourceRef]] = {}

    def problem(self, file: str, line: int | None, rule: str | None, message: str) -> None:
        self.problems.append(RuleProblem(file, line, rule, message))

    def fail(self, file: str, line: int | None, rule: str | None, message: str) -> NoReturn:
        """Record a problem and abandon the file/condition being checked."""
        self.problem(file, line, rule, message)
        raise Invalid

    def unknown_keys(
        self, file: str, mapping: LineMap, allowed: tuple[str, ...], rule: str | None, what: str
    ) -> None:
        for key, line in mapping.duplicate_keys:
            self.problem(file, line, rule, f"key '{key}' appears twice in {what} — keep one")
        for key in mapping:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                self.problem(
                    file,
                    key_line(mapping, key),
                    rule,
                    f"unknown key '{key}' in {what}{hint} (allowed: {', '.join(allowed)})",
                )

    # -- conditions

    def attempt_condition(self, ctx: CondContext, raw: Any, line: int) -> Condition | None:
        """``condition`` that reports instead of raising, so sibling problems are found too."""
        try:
            return self.condition(ctx, raw, line)
        except Invalid:
            return None

    def condition(self, ctx: CondContext, raw: Any, line: int) -> Condition:
        if not isinstance(raw, LineMap):
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"a condition must be a mapping, not {describe(raw)} — use "
                "'{field: <path>, <operator>: <value>}' or 'all:'/'any:'/'not:'",
            )
        groups = [k for k in GROUP_KEYS if k in raw]
        if "field" in raw and groups:
            self.fail(
                ctx.file,
                raw.line,
                ctx.rule,
                f"a condition has both 'field' and '{groups[0]}' — put the comparison "
                f"inside the '{groups[0]}' list instead",
            )
        if not groups:
            return self.compare(ctx, raw)
        if len(groups) > 1:
            self.fail(
                ctx.file,
                raw.line,
                ctx.rule,
                f"a condition has both '{groups[0]}' and '{groups[1]}' — nest one inside the "
                "other, e.g. 'all: [..., {any: [...]}]'",
            )
        group = groups[0]
        self.unknown_keys(ctx.file, raw, (group,), ctx.rule, f"an '{group}' condition")
        body = raw[group]
        body_line = key_line(raw, group)
        if group == "not":
            return Not(self.condition(ctx, body, body_line))
        if not isinstance(body, list) or not body:
            self.fail(
                ctx.file,
                body_line,
                ctx.rule,
                f"'{group}' needs a non-empty list of conditions (each on its own '- ' line), "
                f"not {describe(body)}",
            )
        parts = [self.attempt_condition(ctx, item, line_of(item, body_line)) for item in body]
        conditions = tuple(p for p in parts if p is not None)
        if len(conditions) != len(parts):
            raise Invalid
        return AllOf(conditions) if group == "all" else AnyOf(conditions)

    def compare(self, ctx: CondContext, raw: LineMap) -> Compare:
        line = raw.line
        before = len(self.problems)
        self.unknown_keys(ctx.file, raw, COMPARE_KEYS + GROUP_KEYS, ctx.rule, "a condition")
        if len(self.problems) != before:
            raise Invalid
        path = raw.get("field")
        if not isinstance(path, str) or not path.strip():
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                "a comparison needs 'field: <path>' (e.g. 'field: amount' or "
                "'field: scores.fraud') or use 'all:'/'any:'/'not:'",
            )
        path = path.strip()
        ops = [k for k in OPERATORS if k in raw]
        if len(ops) != 1:
            fix = (
                f"has {len(ops)} operators ({', '.join(ops)}) — keep exactly one; "
                "combine several with 'all:'"
                if ops
                else f"has no operator — add one of {', '.join(OPERATORS)}"
            )
            self.fail(ctx.file, line, ctx.rule, f"the comparison on '{path}' {fix}")
        op: Operator = ops[0]
        where = _Operand(ctx, path, op, self.resolve(ctx, path, line), key_line(raw, op))
        raw_value = raw[op]
        if op in PRESENCE_OPERATORS:
            return Compare(path, op, self.presence(where, raw_value))
        if op == "matches":
            return Compare(path, op, self.regex(where, raw_value))
        if op == "contains":
            return Compare(path, op, self.contains(where, raw_value))
        if isinstance(raw_value, LineMap) and op in EXPRESSION_OPERATORS:
            return Compare(path, op, self.expression(where, raw_value))
        value = self.operand(where, raw_value)
        operand_kind = value_kind(value[0] if isinstance(value, tuple) else value)
        key = fact_key(path)
        seen = ctx.kinds.get(key)
        if seen is not None and seen[0] != operand_kind:
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"'{path}' is compared with a {operand_kind} here but with a {seen[0]} in "
                f"rule '{seen[1]}' — compare one field with one kind of value",
            )
        ctx.kinds.setdefault(key, (operand_kind, ctx.rule or ""))
        return Compare(path, op, value)

    def resolve(self, ctx: CondContext, path: str, line: int) -> str:
        """The kind of ``path`` for this event type (a did-you-mean problem if unknown)."""
        if path.startswith(SCORES_PREFIX) or path == "scores":
            scores = self.score_types.get(ctx.event_type, {})
            name = path[len(SCORES_PREFIX) :]
            if name in scores:
                return scores[name]
            hint = did_you_mean(name, list(scores)).replace("mean '", "mean 'scores.")
            known = ", ".join(f"scores.{s}" for s in scores) or "none"
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"unknown score '{path}' for {ctx.event_type} events{hint} (known: {known})",
            )
        if path.startswith(WINDOWS_PREFIX) or path == "windows":
            declared = self.windows.get(ctx.event_type, {})
            name = path[len(WINDOWS_PREFIX) :]
            if name in declared:
                return "number"
            hint = did_you_mean(name, list(declared)).replace("mean '", "mean 'windows.")
            known = ", ".join(f"windows.{w}" for w in declared) or "none declared"
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"unknown window '{path}' for {ctx.event_type} events{hint} ({known}) — "
                "declare it under 'windows:' in a rule file of this event type",
            )
        fields = self.field_types.get(ctx.event_type, {})
        kind = field_kind(fields, path)
        if kind is None:
            shown = sorted(p.replace(".*.", ".0.") for p in fields)
            hint = did_you_mean(path, shown)
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"unknown field '{path}' for {ctx.event_type} events{hint} "
                f"(known: {', '.join(shown)}; model scores are 'scores.<name>', "
                "windows 'windows.<name>')",
            )
        return kind

    def bad_operand(self, where: _Operand, message: str) -> NoReturn:
        ctx = where.ctx
        self.fail(ctx.file, where.line, ctx.rule, f"'{where.path}' ({where.kind}) {message}")

    def presence(self, where: _Operand, raw: Any) -> bool:
        if raw is not True:
            other = "missing" if where.op == "exists" else "exists"
            self.bad_operand(
                where,
                f"'{where.op}' takes 'true', not {describe(raw)} — write '{where.op}: true' "
                f"(for the opposite use '{other}: true')",
            )
        return True

    def regex(self, where: _Operand, raw: Any) -> str:
        if where.kind not in ("string", "any"):
            self.bad_operand(where, "is not text, so 'matches' cannot apply — use eq/in")
        if not isinstance(raw, str) or not raw:
            self.bad_operand(
                where, f"'matches' needs a regular expression in quotes, not {describe(raw)}"
            )
        if len(raw) > MAX_REGEX_LENGTH:
            self.bad_operand(where, f"the pattern is longer than {MAX_REGEX_LENGTH} characters")
        try:
            re.compile(raw)
        except re.error as exc:
            position = f" at position {exc.pos + 1}" if exc.pos is not None else ""
            self.bad_operand(
                where,
                f"bad regular expression{position}: {exc.msg} in '{raw}' — fix the pattern "
                "(escape special characters like '(' or '+' with a backslash)",
            )
        return raw

    def contains(self, where: _Operand, raw: Any) -> Scalar:
        fields = self.field_types.get(where.ctx.event_type, {})
        if where.kind == "array":
            item_kind = field_kind(fields, f"{where.path}.0")
            if item_kind in (None, "array", "object"):
                self.bad_operand(
                    where,
                    "is a list of records, and 'contains' only looks in text or in a list of "
                    "plain values — compare a field of one item instead, e.g. "
                    f"'{where.path}.0.<field>'",
                )
            return self.scalar(_Operand(where.ctx, where.path, "eq", item_kind, where.line), raw)
        if where.kind not in ("string", "any"):
            self.bad_operand(
                where, "'contains' looks in text or in a list of values — use eq/gt/… here"
            )
        if isinstance(raw, list | dict) or raw is None:
            self.bad_operand(where, f"'contains' needs one value, not {describe(raw)}")
        kind = "string" if where.kind == "string" else "any"
        return self.scalar(_Operand(where.ctx, where.path, "eq", kind, where.line), raw)

    def expression(self, where: _Operand, raw: LineMap) -> Expression:
        ctx = where.ctx
        before = len(self.problems)
        self.unknown_keys(ctx.file, raw, ("expr",), ctx.rule, "an arithmetic operand")
        if len(self.problems) != before:
            raise Invalid
        text = raw.get("expr")
        if isinstance(text, int | float) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str) or not text.strip():
            self.bad_operand(
                where,
                f"'expr' needs arithmetic in quotes, e.g. \"3 * attributes.avg_amount\", "
                f"not {describe(text)}",
            )
        if where.kind not in ("number", "any"):
            self.bad_operand(
                where, "is not a number, so it cannot be compared with arithmetic — mixing types"
            )
        try:
            expression = parse_expression(text)
        except ExpressionError as exc:
            self.bad_operand(where, f'bad expression at column {exc.column} of "{text}": {exc}')
        for path in expression.paths:
            kind = self.resolve(ctx, path, where.line)
            if kind not in ("number", "any"):
                self.bad_operand(
                    where,
                    f"mixes types: '{path}' in \"{text}\" is {kind}, but arithmetic needs "
                    "numbers — use a numeric field",
                )
        return expression

    def operand(self, where: _Operand, raw: Any) -> Scalar | tuple[Scalar, ...]:
        """The checked value of a comparison: a scalar, or a tuple for in/not_in."""
        op, kind = where.op, where.kind
        if kind in ("array", "object"):
            self.bad_operand(
                where,
                "cannot be compared as a whole — compare one of its fields, e.g. 'items.0.sku'"
                " (or use exists/missing/contains)",
            )
        if kind == "datetime":
            self.bad_operand(
                where,
                "is a timestamp, and timestamps cannot be compared in this version of "
                "the rule language — remove the condition",
            )
        if op in LIST_OPERATORS and (not isinstance(raw, list) or not raw):
            self.bad_operand(
                where, f"'{op}' needs a non-empty list, e.g. '{op}: [a, b]', not {describe(raw)}"
            )
        if op not in LIST_OPERATORS and isinstance(raw, list | dict):
            fix = (
                " — use 'in' to compare with a list"
                if isinstance(raw, list)
                else " — for arithmetic write '{expr: \"3 * other.field\"}'"
            )
            self.bad_operand(where, f"'{op}' needs a single value, not {describe(raw)}{fix}")
        checked = [self.scalar(where, item) for item in (raw if op in LIST_OPERATORS else [raw])]
        if op not in LIST_OPERATORS:
            return checked[0]
        kinds = {value_kind(v) for v in checked}
        if len(kinds) > 1:
            self.bad_operand(
                where, f"'{op}' list mixes {' and '.join(sorted(kinds))} values — use one kind"
            )
        return tuple(checked)

    def scalar(self, where: _Operand, item: Any) -> Scalar:
        """One operand value, checked against the field's kind and the operator."""
        op, kind = where.op, where.kind
        if item is None:
            self.bad_operand(where, f"'{op}' has no value — write one after '{op}:'")
        if not isinstance(item, str | int | float) or (
            isinstance(item, float) and not math.isfinite(item)
        ):
            self.bad_operand(where, f"cannot be compared with {describe(item)} — quote the value")
        got = value_kind(item)
        if op in ORDERING_OPERATORS and got != "number":
            self.bad_operand(
                where,
                f"'{op}' compares numbers, but the value is {describe(item)} — "
                "use eq/ne/in/not_in for text and true/false",
            )
        if op in ORDERING_OPERATORS and kind not in ("number", "any"):
            self.bad_operand(where, f"cannot be ordered with '{op}' — use eq/ne/in/not_in")
        expected = _EXPECTED.get(kind)
        if expected is not None and got != expected[0]:
            yaml_hint = (
                " (YAML reads yes/no/on/off/true/false as booleans — quote it, e.g. 'NO')"
                if got == "boolean" and expected[0] == "string"
                else ""
            )
            self.bad_operand(
                where,
                f"is compared with {describe(item)}{yaml_hint} — compare it with {expected[1]}",
            )
        if kind == "boolean" and op in LIST_OPERATORS:
            self.bad_operand(where, f"use 'eq: true' or 'eq: false' instead of '{op}'")
        return item
