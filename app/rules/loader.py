"""Read and check rule files: YAML in ``rules/`` → ``RuleSet`` values, or a list of problems.

This is the "fail at start-up, not at 3 a.m." gate for everything analysts write. Every
problem names the file, the line, the rule and the fix; ``load_rulesets`` refuses to
return anything while a single problem remains, so a bad edit never replaces rules that
are in service. YAML is read with a ``SafeLoader`` subclass only: rule files are data and
nothing in them is ever executed.

File format (one ruleset per event type; several files may declare the same type and are
merged in file-name order; rules run by ``priority``, high first, ties in file order)::

    ruleset: transaction
    mode: stop                      # or collect: every matching rule fires
    default: {decision: approve, reason: No risk signal matched.}
    windows: [...]                  # correlation windows (app.rules.windows)
    rules:
      - name: decline_very_likely_fraud
        priority: 10
        when: {field: scores.fraud, gte: 0.9}
        decision: decline
        reason: "Fraud score {scores.fraud:.3f} is very high."
        actions: [{publish: fraud-alerts}, {tag: [fraud]}]
    tables:                         # compact rows, compiled to rules '<table>.<row>'
      - name: amount_band
        inputs: [amount, channel]
        rows:
          - when: [{gte: 5000}, {in: [online]}]
            decision: review
    tests: [...]                    # read by app.rules.testing, ignored here

``RuleProblem`` lives in ``app.rules.spec`` and is re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.errors import ConfigError
from app.rules.conditions import CondContext, ConditionChecks, Invalid, field_kind
from app.rules.reasons import TemplateError, check_spec, parse_template
from app.rules.shadow import implies
from app.rules.spec import (
    MODES,
    Action,
    AllOf,
    Condition,
    Mode,
    Publish,
    Rule,
    RuleProblem,
    RuleSet,
    Scalar,
    SetValues,
    SourceRef,
    Tag,
    Webhook,
    canonical_condition,
    ruleset_version,
)
from app.rules.yamlsrc import LineLoader, LineMap, describe, did_you_mean, key_line, line_of

__all__ = ["RuleProblem", "check_rules", "field_kind", "load_rulesets"]

TOP_KEYS = ("ruleset", "mode", "default", "windows", "rules", "tables", "tests")
DEFAULT_KEYS = ("decision", "reason")
RULE_KEYS = ("name", "priority", "when", "decision", "reason", "actions")
TABLE_KEYS = ("name", "priority", "inputs", "rows")
ROW_KEYS = ("when", "decision", "reason", "actions")
ACTION_KEYS = ("publish", "webhook", "set", "tag")
ANY_CELL = "-"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
# Kafka's own limits: 1-249 of these characters, and not '.' or '..'.
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_WEBHOOK_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_SET_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_PRIORITY = 1_000_000

# Older names of the line-aware YAML reader, still imported by other modules' tests.
_LineLoader = LineLoader
_Map = LineMap


@dataclass
class _FileRules:
    """What one file contributes to its ruleset, before merging."""

    path: str
    data: LineMap
    event_type: str
    type_line: int
    default: tuple[str, str, int] | None = None
    # True when the file has a 'default' key, even a broken one (reported on its own).
    declares_default: bool = False
    mode: tuple[Mode, int] | None = None
    windows: tuple[Any, ...] = ()
    rules: list[Rule] = field(default_factory=list)


@dataclass(frozen=True)
class _RuleParts:
    """The keys a rule and a table row share, checked."""

    decision: str | None
    reason: str | None
    actions: tuple[Action, ...]
    ok: bool


class _Checker(ConditionChecks):
    """Collects problems while turning parsed YAML files into spec values."""

    def __init__(
        self,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
    ) -> None:
        super().__init__(field_types, score_types)
        # Per event type: paths printed by reasons whose schema kind is number.
        self.numeric_paths: dict[str, set[str]] = {}

    # -- file level

    def parse(self, path: Path, display: str) -> LineMap:
        """The file's top-level mapping, with line numbers (safe loading only)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.fail(display, None, None, f"cannot read the file ({exc}) — save it as UTF-8")
        try:
            data = yaml.load(text, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
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
        if not isinstance(data, LineMap):
            self.fail(
                display,
                1,
                None,
                f"the file holds {describe(data)}, not a mapping — "
                "start it with 'ruleset: <event type>', then 'default:' and 'rules:'",
            )
        return data

    def read_file(self, path: Path, display: str) -> _FileRules:
        """Pass 1: the file's event type and windows; raises ``Invalid`` if its type is
        unknowable. Rules are checked in pass 2, once every file's windows are known."""
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
        type_line = key_line(data, "ruleset")
        if not isinstance(event_type, str) or event_type not in self.field_types:
            hint = did_you_mean(str(event_type), known_types)
            self.fail(
                display,
                type_line,
                None,
                f"unknown event type {event_type!r}{hint} (known types: {', '.join(known_types)})",
            )
        part = _FileRules(display, data, event_type, type_line)
        if "windows" in data:
            part.windows = self.check_windows(part)
        return part

    def check_windows(self, part: _FileRules) -> tuple[Any, ...]:
        data, file, event_type = part.data, part.path, part.event_type
        line = key_line(data, "windows")
        from app.rules.windows import parse_windows  # imports this module: import late

        # Every type's fields: a window may be fed by another event type (`from: ticket`).
        specs, problems = parse_windows(
            data["windows"],
            file=file,
            event_type=event_type,
            field_types=self.field_types,
            score_types=self.score_types,
            line=line,
        )
        self.problems.extend(problems)
        declared = self.windows.setdefault(event_type, {})
        kept = []
        for spec in specs:
            earlier = declared.get(spec.name)
            if earlier is not None:
                self.problem(
                    file,
                    spec.source.line,
                    None,
                    f"window '{spec.name}' is already declared at {earlier.file}:{earlier.line} "
                    "— rename one of them",
                )
                continue
            declared[spec.name] = spec.source
            kept.append(spec)
        return tuple(kept)

    def check_body(self, part: _FileRules) -> None:
        """Pass 2: default, mode, rules and tables of one file."""
        data, display = part.data, part.path
        part.declares_default = "default" in data
        try:
            part.default = self.check_default(part)
        except Invalid:
            part.default = None
        if "mode" in data:
            mode = data["mode"]
            line = key_line(data, "mode")
            if mode in MODES:
                part.mode = (mode, line)
            else:
                self.problem(
                    display,
                    line,
                    None,
                    f"unknown mode {describe(mode)}{did_you_mean(str(mode), MODES)} — use "
                    "'mode: stop' (the first matching rule decides) or 'mode: collect' "
                    "(every matching rule contributes)",
                )
        for key, check in (("rules", self.check_rule), ("tables", self.check_table)):
            items = self.section(part, key)
            for index, raw in enumerate(items):
                part.rules.extend(check(part, raw, index, key_line(data, key)))

    def section(self, part: _FileRules, key: str) -> list[Any]:
        """The list under ``key`` (empty, with a problem, when it is not a list)."""
        data = part.data
        if key not in data:
            return []
        items = data[key]
        if items is None:
            self.problem(
                part.path,
                key_line(data, key),
                None,
                f"'{key}:' is empty — list {key} under it or remove the key",
            )
            return []
        if not isinstance(items, list):
            self.problem(
                part.path,
                key_line(data, key),
                None,
                f"'{key}' must be a list (each item starting with '- name: ...'), "
                f"not {describe(items)}",
            )
            return []
        return items

    def check_default(self, part: _FileRules) -> tuple[str, str, int] | None:
        file, data = part.path, part.data
        if "default" not in data:
            return None
        raw = data["default"]
        line = key_line(data, "default")
        if not isinstance(raw, LineMap):
            self.fail(
                file,
                line,
                None,
                f"'default' must be a mapping with 'decision' and 'reason', not {describe(raw)}",
            )
        self.unknown_keys(file, raw, DEFAULT_KEYS, None, "'default'")
        decision = self.text(file, raw, "decision", None, "'default'", required=True)
        reason = self.text(file, raw, "reason", None, "'default'", required=True)
        if decision is None or reason is None:
            return None
        ctx = CondContext(file, part.event_type, None, {})
        if not self.check_reason(ctx, reason, key_line(raw, "reason")):
            return None
        return decision, reason, line

    def text(
        self, file: str, mapping: LineMap, key: str, rule: str | None, what: str, *, required: bool
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
                key_line(mapping, key),
                rule,
                f"'{key}' must be non-empty text, not {describe(value)} — "
                "quote it if YAML reads it as something else",
            )
            return None
        return value.strip()

    # -- rule level

    def check_rule(self, part: _FileRules, raw: Any, index: int, list_line: int) -> list[Rule]:
        file = part.path
        line = line_of(raw, list_line)
        if not isinstance(raw, LineMap):
            self.problem(
                file,
                line,
                None,
                f"rule #{index + 1} is {describe(raw)}, not a mapping — "
                "write it as '- name: ...' with 'when' and 'decision' indented below",
            )
            return []
        name = self.text(file, raw, "name", None, f"rule #{index + 1}", required=True)
        label = name if name is not None else f"#{index + 1}"
        if name is not None and not _NAME_RE.match(name):
            self.problem(
                file,
                key_line(raw, "name"),
                name,
                "a rule name may only use letters, digits, '_', '.' and '-' (at most 100) "
                "— rename it, e.g. 'review_large_foreign'",
            )
            name = None
        self.unknown_keys(file, raw, RULE_KEYS, label, "a rule")
        priority = self.priority(file, raw, label)
        ctx = CondContext(file, part.event_type, label, self.kinds.setdefault(part.event_type, {}))
        parts = self.rule_parts(ctx, raw)
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
            when = self.attempt_condition(ctx, raw["when"], key_line(raw, "when"))
        if name is None or when is None or priority is None or not parts.ok:
            return []
        return [self.rule(name, when, parts, SourceRef(file, raw.line), priority)]

    @staticmethod
    def rule(
        name: str, when: Condition, parts: _RuleParts, source: SourceRef, priority: int
    ) -> Rule:
        return Rule(
            name=name,
            when=when,
            decision=parts.decision,
            reason=parts.reason if parts.reason is not None else f"Rule '{name}' matched.",
            source=source,
            priority=priority,
            actions=parts.actions,
        )

    def priority(self, file: str, raw: LineMap, label: str | None) -> int | None:
        value = raw.get("priority", 0)
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_PRIORITY:
            self.problem(
                file,
                key_line(raw, "priority"),
                label,
                f"'priority' must be a whole number (higher runs first), not {describe(value)}",
            )
            return None
        return value

    def rule_parts(self, ctx: CondContext, raw: LineMap) -> _RuleParts:
        """decision, reason and actions of a rule or table row."""
        before = len(self.problems)
        decision = self.text(ctx.file, raw, "decision", ctx.rule, "the rule", required=False)
        reason = self.text(ctx.file, raw, "reason", ctx.rule, "the rule", required=False)
        if reason is not None:
            self.check_reason(ctx, reason, key_line(raw, "reason"))
        actions = self.actions(ctx, raw) if "actions" in raw else ()
        if decision is None and not actions and "decision" not in raw:
            self.problem(
                ctx.file,
                raw.line,
                ctx.rule,
                "the rule has neither 'decision' nor 'actions' — add 'decision: <word>' "
                "(or, in collect mode, 'actions:')",
            )
        return _RuleParts(decision, reason, actions, len(self.problems) == before)

    def check_reason(self, ctx: CondContext, text: str, line: int) -> bool:
        """Check every placeholder of a reason; remember which print numbers."""
        try:
            template = parse_template(text)
        except TemplateError as exc:
            self.problem(ctx.file, line, ctx.rule, f"the reason is not valid: {exc}")
            return False
        ok = True
        for placeholder in template.placeholders:
            try:
                kind = self.resolve(ctx, placeholder.path, line)
            except Invalid:
                ok = False
                continue
            if kind in ("array", "object"):
                self.problem(
                    ctx.file,
                    line,
                    ctx.rule,
                    f"the reason prints '{{{placeholder.path}}}', which holds several values "
                    "— print one of its fields instead",
                )
                ok = False
                continue
            wrong = check_spec(placeholder.spec, kind)
            if wrong is not None:
                self.problem(ctx.file, line, ctx.rule, f"in the reason, {wrong}")
                ok = False
            if kind == "number":
                self.numeric_paths.setdefault(ctx.event_type, set()).add(placeholder.path)
        return ok

    # -- actions

    def actions(self, ctx: CondContext, raw: LineMap) -> tuple[Action, ...]:
        items = raw["actions"]
        line = key_line(raw, "actions")
        if not isinstance(items, list) or not items:
            self.problem(
                ctx.file,
                line,
                ctx.rule,
                "'actions' needs a list, e.g. 'actions: [{publish: fraud-alerts}, "
                f"{{tag: [fraud]}}]', not {describe(items)}",
            )
            return ()
        out: list[Action] = []
        for item in items:
            try:
                out.append(self.action(ctx, item, line_of(item, line)))
            except Invalid:
                continue
        return tuple(out)

    def action(self, ctx: CondContext, item: Any, line: int) -> Action:
        file, rule = ctx.file, ctx.rule
        if not isinstance(item, LineMap) or len(item) != 1:
            self.fail(
                file,
                line,
                rule,
                f"each action is one of {', '.join(f'{k}: ...' for k in ACTION_KEYS)} on its "
                f"own '- ' line, not {describe(item)}",
            )
        ((key, value),) = item.items()
        if key not in ACTION_KEYS:
            hint = did_you_mean(str(key), ACTION_KEYS)
            self.fail(
                file,
                line,
                rule,
                f"unknown action '{key}'{hint} (actions: {', '.join(ACTION_KEYS)}"
                "; the decision goes in 'decision:')",
            )
        if key == "publish":
            if not isinstance(value, str) or not _TOPIC_RE.match(value) or value in (".", ".."):
                self.fail(
                    file,
                    line,
                    rule,
                    f"'publish' needs a Kafka topic name (letters, digits, '.', '_', '-', at "
                    f"most 249), not {describe(value)} — e.g. 'publish: fraud-alerts'",
                )
            return Publish(value)
        if key == "webhook":
            if not isinstance(value, str) or not _WEBHOOK_RE.match(value):
                self.fail(
                    file,
                    line,
                    rule,
                    f"'webhook' needs a connector name (lowercase letter first, then "
                    f"a-z, 0-9, '_', '-'; at most 63), not {describe(value)}",
                )
            return Webhook(value)
        if key == "set":
            return SetValues(self.set_values(ctx, value, line))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.fail(file, line, rule, f"'tag' needs a list of words, not {describe(value)}")
        for tag in value:
            if not isinstance(tag, str) or not tag.strip() or len(tag) > 100:
                self.fail(
                    file, line, rule, f"a tag must be text (at most 100), not {describe(tag)}"
                )
        return Tag(tuple(value))

    def set_values(self, ctx: CondContext, value: Any, line: int) -> tuple[tuple[str, Scalar], ...]:
        if not isinstance(value, LineMap) or not value:
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"'set' needs a mapping of fields, e.g. 'set: {{queue: fraud, priority: high}}',"
                f" not {describe(value)}",
            )
        pairs: list[tuple[str, Scalar]] = []
        for key, item in value.items():
            if not isinstance(key, str) or not _SET_KEY_RE.match(key):
                self.fail(
                    ctx.file,
                    key_line(value, key),
                    ctx.rule,
                    f"'set' field {describe(key)} must be a name (letters, digits, '_')",
                )
            if not isinstance(item, str | int | float) or item is None:
                self.fail(
                    ctx.file,
                    key_line(value, key),
                    ctx.rule,
                    f"'set' value of '{key}' must be text, a number or true/false, "
                    f"not {describe(item)}",
                )
            pairs.append((key, item))
        return tuple(pairs)

    # -- decision tables

    def check_table(self, part: _FileRules, raw: Any, index: int, list_line: int) -> list[Rule]:
        file = part.path
        if not isinstance(raw, LineMap):
            self.problem(
                file,
                line_of(raw, list_line),
                None,
                f"table #{index + 1} is {describe(raw)}, not a mapping — write it as "
                "'- name: ...' with 'inputs' and 'rows' below",
            )
            return []
        name = self.text(file, raw, "name", None, f"table #{index + 1}", required=True)
        if name is not None and not _NAME_RE.match(name):
            self.problem(
                file,
                key_line(raw, "name"),
                name,
                "a table name may only use letters, digits, '_', '.' and '-'",
            )
            name = None
        label = name or f"table #{index + 1}"
        self.unknown_keys(file, raw, TABLE_KEYS, label, "a table")
        priority = self.priority(file, raw, label)
        inputs = raw.get("inputs")
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) and i.strip() for i in inputs)
        ):
            self.problem(
                file,
                key_line(raw, "inputs"),
                label,
                f"'inputs' needs a list of field paths, e.g. '[amount, channel]', "
                f"not {describe(inputs)}",
            )
            return []
        rows = raw.get("rows")
        if not isinstance(rows, list) or not rows:
            self.problem(
                file,
                key_line(raw, "rows"),
                label,
                f"'rows' needs a list of rows ('- when: [...]'), not {describe(rows)}",
            )
            return []
        rules = []
        for number, row in enumerate(rows, start=1):
            rule_name = f"{name or 'table'}.{number}"
            rule = self.check_row(part, row, rule_name, inputs, key_line(raw, "rows"))
            if rule is not None and name is not None and priority is not None:
                rules.append(
                    Rule(
                        rule.name,
                        rule.when,
                        rule.decision,
                        rule.reason,
                        rule.source,
                        priority,
                        rule.actions,
                    )
                )
        return rules

    def check_row(
        self, part: _FileRules, row: Any, name: str, inputs: list[str], rows_line: int
    ) -> Rule | None:
        file = part.path
        line = line_of(row, rows_line)
        if not isinstance(row, LineMap):
            self.problem(
                file, line, name, f"a row must be a mapping with 'when', not {describe(row)}"
            )
            return None
        self.unknown_keys(file, row, ROW_KEYS, name, "a table row")
        ctx = CondContext(file, part.event_type, name, self.kinds.setdefault(part.event_type, {}))
        parts = self.rule_parts(ctx, row)
        cells = row.get("when")
        if not isinstance(cells, list) or len(cells) != len(inputs):
            got = f"{len(cells)} cells" if isinstance(cells, list) else describe(cells)
            self.problem(
                file,
                line,
                name,
                f"the row has {got} but the table has {len(inputs)} inputs "
                f"({', '.join(inputs)}) — write one cell per input, '-' for any value",
            )
            return None
        conditions: list[Condition] = []
        ok = True
        for path, cell in zip(inputs, cells, strict=True):
            if cell is None or cell == ANY_CELL:
                continue
            compare = LineMap({"field": path.strip()})
            compare.line = line_of(cell, line)
            compare.key_lines = {}
            compare.duplicate_keys = []
            if isinstance(cell, LineMap):
                compare.update(cell)
                compare.key_lines = dict(cell.key_lines)
                compare.duplicate_keys = list(cell.duplicate_keys)
            else:
                compare["eq"] = cell  # a bare value means "equals"
            condition = self.attempt_condition(ctx, compare, compare.line)
            if condition is None:
                ok = False
            else:
                conditions.append(condition)
        if ok and not conditions:
            self.problem(
                file,
                line,
                name,
                "every cell is '-', so the row matches everything — put that in 'default' "
                "or give the row at least one condition",
            )
            return None
        if not ok or not parts.ok:
            return None
        when = conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))
        return self.rule(name, when, parts, SourceRef(file, line), 0)


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
    mode = _merge_mode(checker, event_type, parts)
    seen: dict[str, Rule] = {}
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
            rules.append(rule)
    # Higher priority first; sorted() is stable, so ties keep file order.
    ordered = sorted(rules, key=lambda r: -r.priority)
    if mode == "stop":
        ordered = _reachable(checker, ordered)
    if not defaults:
        return None
    decision, reason, _ = defaults[0][1]
    frozen = tuple(ordered)
    windows = tuple(w for p in parts for w in p.windows)
    return RuleSet(
        event_type=event_type,
        rules=frozen,
        default_decision=decision,
        default_reason=reason,
        version=ruleset_version(event_type, frozen, decision, reason, mode, windows),
        files=tuple(p.path for p in parts),
        mode=mode,
        windows=windows,
        numeric_paths=frozenset(checker.numeric_paths.get(event_type, ())),
    )


def _merge_mode(checker: _Checker, event_type: str, parts: list[_FileRules]) -> Mode:
    declared = [(p.path, p.mode) for p in parts if p.mode is not None]
    if not declared:
        return "stop"
    (first_path, (mode, _)), rest = declared[0], declared[1:]
    for path, (other, line) in ((p, m) for p, m in rest if m is not None):
        if other != mode:
            checker.problem(
                path,
                line,
                None,
                f"the {event_type} ruleset is 'mode: {mode}' in {first_path} — "
                "one ruleset has one mode; make them agree",
            )
    return mode


def _shadows(first: Rule, later: Rule) -> bool:
    if canonical_condition(first.when) == canonical_condition(later.when):
        return True
    return first.priority == later.priority and implies(later.when, first.when)


def _reachable(checker: _Checker, ordered: list[Rule]) -> list[Rule]:
    """Stop mode: every rule needs a decision, and no rule may be hidden behind one that
    comes first and matches whenever it does: one with the identical condition (at any
    priority), or a broader one at the same priority (a broad rule written above a
    narrow one). A broader rule given a *higher* priority is a deliberate override
    ("hold everything during the audit") and is allowed."""
    kept: list[Rule] = []
    for rule in ordered:
        if rule.decision is None:
            checker.problem(
                rule.source.file,
                rule.source.line,
                rule.name,
                "the rule has no 'decision', which only 'mode: collect' allows — add "
                "'decision: <word>' or set 'mode: collect' on the ruleset",
            )
            continue
        shadow = next((k for k in kept if _shadows(k, rule)), None)
        if shadow is not None:
            same = (
                "the identical condition"
                if canonical_condition(shadow.when) == canonical_condition(rule.when)
                else "a broader condition (it matches whenever this one does)"
            )
            order = (
                f"a higher priority ({shadow.priority} > {rule.priority})"
                if shadow.priority > rule.priority
                else "the same priority and comes first"
            )
            checker.problem(
                rule.source.file,
                rule.source.line,
                rule.name,
                f"can never match: rule '{shadow.name}' "
                f"({shadow.source.file}:{shadow.source.line}) has {same} and {order}, and in "
                "stop mode only the first matching rule fires — remove this rule, narrow "
                "the other, or give this one a higher priority",
            )
            continue
        kept.append(rule)
    return kept


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
            part = checker.read_file(path, str(path))
        except Invalid:
            untyped.append(str(path))
        else:
            by_type.setdefault(part.event_type, []).append(part)
    # Windows of every file are known now, so a rule may use one declared in another file.
    for parts in by_type.values():
        for part in parts:
            checker.check_body(part)
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
