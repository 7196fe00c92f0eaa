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
    tests: [...]                    # read by app.rules.authoring.case_reader, ignored here

Where things are: the checked values (and ``RuleProblem``) in ``app.rules.language.spec``;
conditions in ``app.rules.language.conditions``, actions in ``app.rules.language.actions``,
a rule's own keys in ``app.rules.language.rule_checks``, decision tables in
``app.rules.language.tables``, windows in ``app.rules.windows`` (read by its ``parse``),
and merging the files of one ruleset in ``app.rules.language.merge``. This module reads
the files and holds the entry points; it sits above ``language/`` and ``windows/``
because a rule file holds both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from app.declarations.yamlsrc import LineLoader, LineMap, describe, did_you_mean, key_line
from app.errors import ConfigError
from app.rules.language.conditions import CondContext, Invalid, field_kind
from app.rules.language.merge import merge_ruleset
from app.rules.language.rule_checks import FileRules
from app.rules.language.spec import MODES, RuleProblem, RuleSet
from app.rules.language.tables import TableChecks
from app.rules.windows.parse import parse_windows

__all__ = ["RuleProblem", "check_rules", "field_kind", "load_rulesets"]

TOP_KEYS = ("ruleset", "mode", "default", "windows", "rules", "tables", "tests")
DEFAULT_KEYS = ("decision", "reason")


# Older names of the line-aware YAML reader, still imported by other modules' tests.
_LineLoader = LineLoader
_Map = LineMap


class _Checker(TableChecks):
    """Collects problems while turning parsed YAML files into spec values."""

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

    def read_file(self, path: Path, display: str) -> FileRules:
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
        part = FileRules(display, data, event_type, type_line)
        if "windows" in data:
            part.windows = self.check_windows(part)
        return part

    def check_windows(self, part: FileRules) -> tuple[Any, ...]:
        data, file, event_type = part.data, part.path, part.event_type
        line = key_line(data, "windows")

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

    def check_body(self, part: FileRules) -> None:
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

    def section(self, part: FileRules, key: str) -> list[Any]:
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

    def check_default(self, part: FileRules) -> tuple[str, str, int] | None:
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


# --- the public entry points -----------------------------------------------------------------


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
    by_type: dict[str, list[FileRules]] = {}
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
        ruleset = merge_ruleset(checker, event_type, parts)
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
