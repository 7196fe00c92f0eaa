"""Read and check rule files: YAML in ``rules/`` → ``RuleSet`` values, or a list of problems.

This is the "fail at start-up, not at 3 a.m." gate for everything analysts write. Every
problem names the file, the line, the rule and the fix; ``load_rulesets`` refuses to
return anything while a single problem remains, so a bad edit never replaces rules that
are in service. YAML is read with a ``SafeLoader`` subclass only: rule files are data and
nothing in them is ever executed.

File format (one ruleset per event type; several files may declare the same type and are
merged in file-name order; rules are evaluated in that order, first match wins)::

    ruleset: transaction
    default: {decision: approve, reason: No risk signal matched.}
    rules:
      - name: decline_very_likely_fraud
        when: {field: scores.fraud, gte: 0.9}
        decision: decline
        reason: Fraud score is very high.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from app.errors import ConfigError
from app.rules.compile import ValueKind, fact_key, value_kind
from app.rules.spec import (
    LIST_OPERATORS,
    OPERATORS,
    ORDERING_OPERATORS,
    SCORES_PREFIX,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Not,
    Operator,
    Rule,
    RuleSet,
    Scalar,
    SourceRef,
    canonical_condition,
    ruleset_version,
)

TOP_KEYS = ("ruleset", "default", "rules")
DEFAULT_KEYS = ("decision", "reason")
RULE_KEYS = ("name", "when", "decision", "reason")
GROUP_KEYS = ("all", "any", "not")
COMPARE_KEYS = ("field", *OPERATORS)

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_INDEX_RE = re.compile(r"^\d+$")


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


# --- YAML with line numbers -------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers its own line and each key's line (1-based)."""

    line: int
    key_lines: dict[Any, int]
    duplicate_keys: list[tuple[Any, int]]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are ``_Map``s (safe: only plain YAML types are built)."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    data = _Map()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    data.duplicate_keys = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            )
        if key in data:
            # Plain YAML silently keeps the last value; for rules that hides mistakes.
            data.duplicate_keys.append((key, line))
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line
    return data


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def _line_of(value: Any, fallback: int) -> int:
    return value.line if isinstance(value, _Map) else fallback


def _key_line(mapping: _Map, key: str) -> int:
    return mapping.key_lines.get(key, mapping.line)


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def _describe(value: Any) -> str:
    """How a YAML value reads in a message ("the string 'x'", "a list")."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float | str):
        kind = "string" if isinstance(value, str) else "number"
        shown = f"'{value}'" if isinstance(value, str) else str(value)
        return f"the {kind} {shown}"
    named = {type(None): "nothing (null)", list: "a list", _Map: "a mapping"}
    return named.get(type(value), f"a {type(value).__name__} ({value})")


# --- per-file checking -------------------------------------------------------------------


@dataclass
class _FileRules:
    """What one file contributes to its ruleset, before merging."""

    path: str
    event_type: str
    type_line: int
    default: tuple[str, str, int] | None
    # True when the file has a 'default' key, even a broken one (reported on its own).
    declares_default: bool
    rules: list[Rule] = field(default_factory=list)


class _Checker:
    """Collects problems while turning parsed YAML into spec values."""

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

    def problem(self, file: str, line: int | None, rule: str | None, message: str) -> None:
        self.problems.append(RuleProblem(file, line, rule, message))

    def fail(self, file: str, line: int | None, rule: str | None, message: str) -> NoReturn:
        """Record a problem and abandon the file/condition being checked."""
        self.problem(file, line, rule, message)
        raise _Invalid

    def unknown_keys(
        self, file: str, mapping: _Map, allowed: tuple[str, ...], rule: str | None, what: str
    ) -> None:
        for key, line in mapping.duplicate_keys:
            self.problem(file, line, rule, f"key '{key}' appears twice in {what} — keep one")
        for key in mapping:
            if key not in allowed:
                hint = _did_you_mean(str(key), allowed)
                self.problem(
                    file,
                    _key_line(mapping, key),
                    rule,
                    f"unknown key '{key}' in {what}{hint} (allowed: {', '.join(allowed)})",
                )

    # -- file level

    def parse(self, path: Path, display: str) -> _Map:
        """The file's top-level mapping, with line numbers (safe loading only)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.fail(display, None, None, f"cannot read the file ({exc}) — save it as UTF-8")
        try:
            data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            column = f" column {mark.column + 1}" if mark else ""
            what = exc.problem or exc.context or "invalid YAML"
            self.fail(
                display,
                line,
                None,
                f"YAML syntax error{column}: {what} — fix the indentation/quoting there "
                "(a value containing ': ' or starting with a special character needs quotes)",
            )
        except yaml.YAMLError as exc:
            self.fail(display, None, None, f"YAML error: {exc} — fix the file's syntax")
        if data is None:
            self.fail(display, 1, None, "the file is empty — start it with 'ruleset: <event type>'")
        if not isinstance(data, _Map):
            self.fail(
                display,
                1,
                None,
                f"the file holds {_describe(data)}, not a mapping — "
                "start it with 'ruleset: <event type>', then 'default:' and 'rules:'",
            )
        return data

    def check_file(self, path: Path, display: str) -> _FileRules:
        """What one file contributes; raises ``_Invalid`` if its event type is unknowable."""
        data = self.parse(path, display)
        self.unknown_keys(display, data, TOP_KEYS, None, "the file")
        known_types = sorted(self.field_types)
        event_type = data.get("ruleset")
        if "ruleset" not in data:
            self.fail(
                display,
                data.line,
                None,
                "missing 'ruleset' — add 'ruleset: <event type>' "
                f"(known types: {', '.join(known_types)})",
            )
        type_line = _key_line(data, "ruleset")
        if not isinstance(event_type, str) or event_type not in self.field_types:
            hint = _did_you_mean(str(event_type), known_types)
            self.fail(
                display,
                type_line,
                None,
                f"unknown event type {event_type!r}{hint} (known types: {', '.join(known_types)})",
            )
        try:
            default = self.check_default(display, data)
        except _Invalid:
            default = None
        result = _FileRules(display, event_type, type_line, default, "default" in data)
        rules = data.get("rules")
        if rules is None:
            if "rules" in data:
                self.problem(
                    display,
                    _key_line(data, "rules"),
                    None,
                    "'rules:' is empty — list rules under it or remove the key",
                )
            return result
        if not isinstance(rules, list):
            self.problem(
                display,
                _key_line(data, "rules"),
                None,
                f"'rules' must be a list of rules (each starting with '- name: ...'), "
                f"not {_describe(rules)}",
            )
            return result
        for index, raw in enumerate(rules):
            rule = self.check_rule(display, event_type, raw, index, _key_line(data, "rules"))
            if rule is not None:
                result.rules.append(rule)
        return result

    def check_default(self, file: str, data: _Map) -> tuple[str, str, int] | None:
        if "default" not in data:
            return None
        raw = data["default"]
        line = _key_line(data, "default")
        if not isinstance(raw, _Map):
            self.fail(
                file,
                line,
                None,
                f"'default' must be a mapping with 'decision' and 'reason', not {_describe(raw)}",
            )
        self.unknown_keys(file, raw, DEFAULT_KEYS, None, "'default'")
        decision = self.text(file, raw, "decision", None, "'default'", required=True)
        reason = self.text(file, raw, "reason", None, "'default'", required=True)
        if decision is None or reason is None:
            return None
        return decision, reason, line

    def text(
        self, file: str, mapping: _Map, key: str, rule: str | None, what: str, *, required: bool
    ) -> str | None:
        """A non-empty string under ``key``, or None (with a problem if it was wrong)."""
        if key not in mapping:
            if required:
                self.problem(
                    file, mapping.line, rule, f"{what} is missing '{key}' — add '{key}: ...'"
                )
            return None
        value = mapping[key]
        if not isinstance(value, str) or not value.strip():
            self.problem(
                file,
                _key_line(mapping, key),
                rule,
                f"'{key}' must be non-empty text, not {_describe(value)} — "
                "quote it if YAML reads it as something else",
            )
            return None
        return value.strip()

    # -- rule level

    def check_rule(
        self, file: str, event_type: str, raw: Any, index: int, list_line: int
    ) -> Rule | None:
        line = _line_of(raw, list_line)
        if not isinstance(raw, _Map):
            self.problem(
                file,
                line,
                None,
                f"rule #{index + 1} is {_describe(raw)}, not a mapping — "
                "write it as '- name: ...' with 'when' and 'decision' indented below",
            )
            return None
        name = self.text(file, raw, "name", None, f"rule #{index + 1}", required=True)
        label = name if name is not None else f"#{index + 1}"
        if name is not None and not _NAME_RE.match(name):
            self.problem(
                file,
                _key_line(raw, "name"),
                name,
                "a rule name may only use letters, digits, '_', '.' and '-' (at most 100) "
                "— rename it, e.g. 'review_large_foreign'",
            )
            name = None
        self.unknown_keys(file, raw, RULE_KEYS, label, "a rule")
        decision = self.text(file, raw, "decision", label, "the rule", required=True)
        reason = self.text(file, raw, "reason", label, "the rule", required=False)
        when: Condition | None = None
        if "when" not in raw:
            self.problem(
                file,
                raw.line,
                label,
                "the rule is missing 'when' — add the condition, e.g. "
                "'when: {field: amount, gt: 1000}'",
            )
        else:
            ctx = _CondContext(file, event_type, label, self.kinds.setdefault(event_type, {}))
            when = self.attempt_condition(ctx, raw["when"], _key_line(raw, "when"))
        if name is None or decision is None or when is None:
            return None
        return Rule(
            name=name,
            when=when,
            decision=decision,
            reason=reason if reason is not None else f"Rule '{name}' matched.",
            source=SourceRef(file, raw.line),
        )

    # -- condition level

    def attempt_condition(self, ctx: _CondContext, raw: Any, line: int) -> Condition | None:
        """``condition`` that reports instead of raising, so sibling problems are found too."""
        try:
            return self.condition(ctx, raw, line)
        except _Invalid:
            return None

    def condition(self, ctx: _CondContext, raw: Any, line: int) -> Condition:
        if not isinstance(raw, _Map):
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"a condition must be a mapping, not {_describe(raw)} — use "
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
        body_line = _key_line(raw, group)
        if group == "not":
            return Not(self.condition(ctx, body, body_line))
        if not isinstance(body, list) or not body:
            self.fail(
                ctx.file,
                body_line,
                ctx.rule,
                f"'{group}' needs a non-empty list of conditions (each on its own '- ' line), "
                f"not {_describe(body)}",
            )
        parts = [self.attempt_condition(ctx, item, _line_of(item, body_line)) for item in body]
        conditions = tuple(p for p in parts if p is not None)
        if len(conditions) != len(parts):
            raise _Invalid
        return AllOf(conditions) if group == "all" else AnyOf(conditions)

    def compare(self, ctx: _CondContext, raw: _Map) -> Compare:
        line = raw.line
        before = len(self.problems)
        self.unknown_keys(ctx.file, raw, COMPARE_KEYS + GROUP_KEYS, ctx.rule, "a condition")
        if len(self.problems) != before:
            raise _Invalid
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
        where = _Operand(ctx, path, op, self.resolve(ctx, path, line), _key_line(raw, op))
        value = self.operand(where, raw[op])
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

    def resolve(self, ctx: _CondContext, path: str, line: int) -> str:
        """The kind of ``path`` for this event type (a did-you-mean problem if unknown)."""
        if path.startswith(SCORES_PREFIX) or path == "scores":
            scores = self.score_types.get(ctx.event_type, {})
            name = path[len(SCORES_PREFIX) :]
            if name in scores:
                return scores[name]
            close = difflib.get_close_matches(name, list(scores), n=1, cutoff=0.6)
            hint = f" — did you mean 'scores.{close[0]}'?" if close else ""
            known = ", ".join(f"scores.{s}" for s in scores) or "none"
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"unknown score '{path}' for {ctx.event_type} events{hint} (known: {known})",
            )
        fields = self.field_types.get(ctx.event_type, {})
        kind = field_kind(fields, path)
        if kind is None:
            shown = sorted(p.replace(".*.", ".0.") for p in fields)
            hint = _did_you_mean(path, shown)
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"unknown field '{path}' for {ctx.event_type} events{hint} "
                f"(known: {', '.join(shown)}; model scores are 'scores.<name>')",
            )
        return kind

    def bad_operand(self, where: _Operand, message: str) -> NoReturn:
        ctx = where.ctx
        self.fail(ctx.file, where.line, ctx.rule, f"'{where.path}' ({where.kind}) {message}")

    def operand(self, where: _Operand, raw: Any) -> Scalar | tuple[Scalar, ...]:
        """The checked value of a comparison: a scalar, or a tuple for in/not_in."""
        op, kind = where.op, where.kind
        if kind in ("array", "object"):
            self.bad_operand(
                where,
                "cannot be compared as a whole — compare one of its fields, e.g. 'items.0.sku'",
            )
        if kind == "datetime":
            self.bad_operand(
                where,
                "is a timestamp, and timestamps cannot be compared in this version of "
                "the rule language — remove the condition",
            )
        if op in LIST_OPERATORS and (not isinstance(raw, list) or not raw):
            self.bad_operand(
                where, f"'{op}' needs a non-empty list, e.g. '{op}: [a, b]', not {_describe(raw)}"
            )
        if op not in LIST_OPERATORS and isinstance(raw, list | dict):
            fix = " — use 'in' to compare with a list" if isinstance(raw, list) else ""
            self.bad_operand(where, f"'{op}' needs a single value, not {_describe(raw)}{fix}")
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
            self.bad_operand(where, f"cannot be compared with {_describe(item)} — quote the value")
        got = value_kind(item)
        if op in ORDERING_OPERATORS and got != "number":
            self.bad_operand(
                where,
                f"'{op}' compares numbers, but the value is {_describe(item)} — "
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
                f"is compared with {_describe(item)}{yaml_hint} — compare it with {expected[1]}",
            )
        if kind == "boolean" and op in LIST_OPERATORS:
            self.bad_operand(where, f"use 'eq: true' or 'eq: false' instead of '{op}'")
        return item


# Field kind -> (operand kind it needs, how to say so); "any" takes every scalar.
_EXPECTED: dict[str, tuple[ValueKind, str]] = {
    "number": ("number", "a number like 1000"),
    "string": ("string", "text"),
    "boolean": ("boolean", "true or false"),
}


class _Invalid(Exception):
    """Raised after a problem is recorded, to abandon the enclosing condition/file."""


@dataclass(frozen=True)
class _Operand:
    """Where an operand sits, for its checks and messages."""

    ctx: _CondContext
    path: str
    op: Operator
    kind: str
    line: int


@dataclass
class _CondContext:
    """Where a condition sits: for messages and for the one-kind-per-field check."""

    file: str
    event_type: str
    rule: str | None
    kinds: dict[str, tuple[ValueKind, str]]


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


# --- merging and the public entry points -----------------------------------------------------


def _merge(checker: _Checker, event_type: str, parts: list[_FileRules]) -> RuleSet | None:
    defaults = [(p.path, p.default) for p in parts if p.default is not None]
    first = parts[0]
    if not any(p.declares_default for p in parts):
        checker.problem(
            first.path,
            first.type_line,
            None,
            f"the {event_type} ruleset has no 'default' — add 'default: {{decision: ..., "
            "reason: ...}}' (what to decide when no rule matches)",
        )
    for path, extra in defaults[1:]:
        assert extra is not None
        checker.problem(
            path,
            extra[2],
            None,
            f"the {event_type} ruleset already has a 'default' in {defaults[0][0]} — keep one",
        )
    seen: dict[str, Rule] = {}
    conditions: dict[str, Rule] = {}
    rules: list[Rule] = []
    for part in parts:
        for rule in part.rules:
            earlier = seen.get(rule.name)
            if earlier is not None:
                checker.problem(
                    part.path,
                    rule.source.line,
                    rule.name,
                    f"duplicate rule name (first at {earlier.source.file}:{earlier.source.line}) "
                    "— rename one of them",
                )
                continue
            seen[rule.name] = rule
            key = repr(canonical_condition(rule.when))
            shadow = conditions.get(key)
            if shadow is not None:
                checker.problem(
                    part.path,
                    rule.source.line,
                    rule.name,
                    f"can never match: rule '{shadow.name}' "
                    f"({shadow.source.file}:{shadow.source.line}) has the identical condition "
                    "and comes first — remove this rule or change its condition",
                )
                continue
            conditions[key] = rule
            rules.append(rule)
    if not defaults:
        return None
    decision, reason, _ = defaults[0][1]
    frozen = tuple(rules)
    return RuleSet(
        event_type=event_type,
        rules=frozen,
        default_decision=decision,
        default_reason=reason,
        version=ruleset_version(event_type, frozen, decision, reason),
        files=tuple(p.path for p in parts),
    )


def check_rules(
    rules_dir: Path,
    field_types: Mapping[str, Mapping[str, str]],
    score_types: Mapping[str, Mapping[str, str]],
) -> tuple[dict[str, RuleSet], list[RuleProblem]]:
    """Read every ``*.yaml``/``*.yml`` file in ``rules_dir`` and check it against the
    event field tables (``field_types[event_type][path] = kind``) and model score tables.

    Returns the rulesets that are fine and every problem found; a ruleset with any
    problem is left out. Every event type in ``field_types`` needs a ruleset.
    """
    checker = _Checker(field_types, score_types)
    rules_dir = Path(rules_dir)
    if not rules_dir.is_dir():
        checker.problem(
            str(rules_dir),
            None,
            None,
            "the rules directory does not exist — create it or point ARBITER_RULES_DIR at it",
        )
        return {}, checker.problems
    paths = sorted(p for p in rules_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    by_type: dict[str, list[_FileRules]] = {}
    untyped: list[str] = []
    for path in paths:
        try:
            part = checker.check_file(path, str(path))
        except _Invalid:
            untyped.append(str(path))
        else:
            by_type.setdefault(part.event_type, []).append(part)
    rulesets: dict[str, RuleSet] = {}
    for event_type, parts in by_type.items():
        before = len(checker.problems)
        ruleset = _merge(checker, event_type, parts)
        bad_files = {p.file for p in checker.problems}
        clean = len(checker.problems) == before and not bad_files & {p.path for p in parts}
        if ruleset is not None and clean:
            rulesets[event_type] = ruleset
    # The service runs every type in field_types; one without rules could not decide.
    maybe = f" (or fix {', '.join(untyped)}, reported above)" if untyped else ""
    for event_type in sorted(field_types):
        if event_type not in by_type:
            checker.problem(
                str(rules_dir),
                None,
                None,
                f"no rule file declares 'ruleset: {event_type}' — add "
                f"{rules_dir / (event_type + '.yaml')} with at least a 'default' decision{maybe}",
            )
    return rulesets, checker.problems


def load_rulesets(
    rules_dir: Path,
    field_types: Mapping[str, Mapping[str, str]],
    score_types: Mapping[str, Mapping[str, str]],
) -> dict[str, RuleSet]:
    """Every ruleset in ``rules_dir``; raises ``ConfigError`` listing every problem (one
    per line) if there is any, so a bad edit never goes into service."""
    rulesets, problems = check_rules(rules_dir, field_types, score_types)
    if problems:
        lines = "\n".join(str(p) for p in problems)
        raise ConfigError(
            f"{len(problems)} problem(s) in the rule files under {rules_dir}; "
            f"fix them and reload:\n{lines}"
        )
    return rulesets
