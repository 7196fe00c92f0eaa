"""Check one rule: its name, priority, condition, decision, reason and actions.

``RuleChecks`` turns a ``rules:`` item of a rule file into a ``Rule``; ``FileRules``
holds what one file contributes before its ruleset is merged. Decision tables
(``app.rules.language.tables``) and the file-level loader (``app.rules.loader``) build on
it.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.declarations.yamlsrc import LineMap, describe, key_line, line_of
from app.rules.language.actions import ActionChecks
from app.rules.language.conditions import CondContext, Invalid
from app.rules.language.reasons import TemplateError, check_spec, parse_template
from app.rules.language.spec import Action, Condition, Mode, Rule, SourceRef

__all__ = ["NAME_RE", "RULE_KEYS", "FileRules", "RuleChecks", "RuleParts"]

RULE_KEYS = ("name", "priority", "when", "decision", "reason", "actions")

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_MAX_PRIORITY = 1_000_000


@dataclass
class FileRules:
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
class RuleParts:
    """The keys a rule and a table row share, checked."""

    decision: str | None
    reason: str | None
    actions: tuple[Action, ...]
    ok: bool


class RuleChecks(ActionChecks):
    """Collects problems while turning rule mappings into ``Rule`` values."""

    def __init__(
        self,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
    ) -> None:
        super().__init__(field_types, score_types)
        # Per event type: paths printed by reasons whose schema kind is number.
        self.numeric_paths: dict[str, set[str]] = {}

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

    def check_rule(self, part: FileRules, raw: Any, index: int, list_line: int) -> list[Rule]:
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
        if name is not None and not NAME_RE.match(name):
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
        name: str, when: Condition, parts: RuleParts, source: SourceRef, priority: int
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

    def rule_parts(self, ctx: CondContext, raw: LineMap) -> RuleParts:
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
        return RuleParts(decision, reason, actions, len(self.problems) == before)

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
