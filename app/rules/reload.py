"""Hot reload of rule files: notice a change in the rules folder, check it, swap it in.

The consume loop asks ``RulesWatcher.poll()`` between batches. A change is detected by
the content hash of the folder's ``*.yaml``/``*.yml`` files (robust to editors that
rewrite files and to Kubernetes ConfigMap symlink swaps). New rules are checked exactly
like ``arbiter rules check``; a folder with any problem is refused as a whole, the
problems are logged, and the rules in service keep serving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.declarations import EventTypes
from app.declarations.folder import FolderWatch
from app.rules.language.expr import Expression
from app.rules.language.reasons import TemplateError, parse_template
from app.rules.language.spec import (
    SCORES_PREFIX,
    WINDOWS_PREFIX,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Not,
    RuleProblem,
    RuleSet,
)
from app.rules.loader import check_rules
from app.rules.windows.where import Where, WhereAll, WhereAny, WhereNot, WhereTest


@dataclass(frozen=True)
class ReloadResult:
    """A changed folder: either new rulesets to swap in, or the problems that refused it."""

    fingerprint: str
    rulesets: dict[str, RuleSet] | None
    problems: tuple[RuleProblem, ...]


class RulesWatcher:
    def __init__(
        self,
        rules_dir: Path,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
        *,
        interval_s: float = 2.0,
    ) -> None:
        self._dir = rules_dir
        self._watch = FolderWatch(rules_dir, ("*.yaml", "*.yml"), interval_s=interval_s)
        self._fields = field_types
        self._scores = score_types
        self._refused = False

    def set_vocabulary(
        self,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
    ) -> None:
        """Check later changes against new declarations; a change refused before is
        checked again at the next poll (it may name a field that is declared now)."""
        self._fields = field_types
        self._scores = score_types
        if self._refused:
            self._watch.forget()

    def poll(self, *, force: bool = False) -> ReloadResult | None:
        """``None`` unless the folder changed since the last poll (checked at most every
        ``interval_s``, or now with ``force``); a refused change is reported once, not on
        every poll."""
        current = self._watch.changed(force=force)
        if current is None:
            return None
        rulesets, problems = check_rules(self._dir, self._fields, self._scores)
        self._refused = bool(problems)
        if problems:
            return ReloadResult(current, None, tuple(problems))
        return ReloadResult(current, rulesets, ())


def vocabulary(
    types: EventTypes,
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The fields and scores rule files may name, for ``types``."""
    fields: dict[str, dict[str, str]] = {t: dict(k) for t, k in types.field_kinds().items()}
    return fields, types.score_kinds()


def rules_check(rules_dir: Path) -> Callable[[EventTypes], list[str]]:
    """The start-up rules check of the rule files in ``rules_dir`` against candidate
    declarations (``app.declarations.reload.RulesCheck``)."""

    def check(types: EventTypes) -> list[str]:
        _, problems = check_rules(rules_dir, *vocabulary(types))
        return [str(p) for p in problems]

    return check


def fields_read(rulesets: Mapping[str, RuleSet]) -> dict[str, dict[str, str]]:
    """Per event type, every event field path the rules read — in conditions, reasons and
    windows (a window's under the type that feeds it) — mapped to the first place that
    reads it (``rule 'x' (rules/loan.yaml:12)``). Scores and windows are left out."""
    read: dict[str, dict[str, str]] = {}

    def note(event_type: str, path: str, where: str) -> None:
        if not path.startswith((SCORES_PREFIX, WINDOWS_PREFIX)):
            read.setdefault(event_type, {}).setdefault(path, where)

    for ruleset in rulesets.values():
        for rule in ruleset.rules:
            line = "" if rule.source.line is None else f":{rule.source.line}"
            where = f"rule '{rule.name}' ({rule.source.file}{line})"
            for path in [*_condition_paths(rule.when), *_template_paths(rule.reason)]:
                note(ruleset.event_type, path, where)
        for path in _template_paths(ruleset.default_reason):
            note(ruleset.event_type, path, f"the default reason of ruleset '{ruleset.event_type}'")
        for window in ruleset.windows:
            source = window.source
            line = "" if source.line is None else f":{source.line}"
            where = f"window '{window.name}' ({source.file}{line})"
            paths = [window.of] if window.of else []
            if window.where is not None:
                paths += _where_paths(window.where)
            for path in paths:
                note(window.source_type, path, where)
    return read


def _condition_paths(condition: Condition) -> list[str]:
    if isinstance(condition, Compare):
        value = condition.value
        extra = list(value.paths) if isinstance(value, Expression) else []
        return [condition.path, *extra]
    if isinstance(condition, AllOf | AnyOf):
        return [p for c in condition.conditions for p in _condition_paths(c)]
    if isinstance(condition, Not):
        return _condition_paths(condition.condition)
    return []


def _where_paths(where: Where) -> list[str]:
    if isinstance(where, WhereTest):
        return [where.path]
    if isinstance(where, WhereAll | WhereAny):
        return [p for w in where.conditions for p in _where_paths(w)]
    if isinstance(where, WhereNot):
        return _where_paths(where.condition)
    return []


def _template_paths(text: str) -> list[str]:
    try:
        return [p.path for p in parse_template(text).placeholders]
    except TemplateError:
        return []
