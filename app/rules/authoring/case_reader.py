"""Read the ``tests:`` of rule files into ``RuleTest`` values, or problems.

Called by ``app.rules.authoring.testing`` (``arbiter rules test``), which shows the
format. Every problem names the file, the line, the test and the fix; a test with a
problem is left out. A file that cannot be read, or whose ruleset type is unknown, is
skipped here: ``app.rules.loader.check_rules`` reports it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from app.declarations.yamlsrc import (
    LineLoader,
    LineMap,
    describe,
    did_you_mean,
    key_line,
    line_of,
    plain,
)
from app.rules.authoring.cases import Expectation, RuleTest
from app.rules.language.spec import RuleProblem, SourceRef

TEST_KEYS = ("name", "event", "scores", "windows", "expect")


EXPECT_KEYS = ("decision", "rules_fired", "actions", "tags")


ACTION_KEYS = ("publish", "webhook", "set", "tag")


class _Reader:
    """Turns the ``tests:`` list of one file into ``RuleTest`` values, or problems."""

    def __init__(self, file: str, event_type: str) -> None:
        self.file = file
        self.event_type = event_type
        self.problems: list[RuleProblem] = []

    def problem(self, line: int | None, label: str, message: str) -> None:
        self.problems.append(RuleProblem(self.file, line, None, f"{label}: {message}"))

    def tests(self, raw: Any, line: int) -> list[RuleTest]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(
                line, "tests", f"must be a list ('- name: ...' items), not {describe(raw)}"
            )
            return []
        out: list[RuleTest] = []
        names: dict[str, int] = {}
        for index, item in enumerate(raw, start=1):
            test = self.test(item, index, line)
            if test is None:
                continue
            first = names.setdefault(test.name, test.source.line or 0)
            if first != (test.source.line or 0):
                self.problem(
                    test.source.line,
                    f"test '{test.name}'",
                    f"the name is used twice (first at line {first}) — rename one",
                )
                continue
            out.append(test)
        return out

    def test(self, raw: Any, index: int, list_line: int) -> RuleTest | None:
        line = line_of(raw, list_line)
        if not isinstance(raw, LineMap):
            self.problem(
                line,
                f"test #{index}",
                f"is {describe(raw)}, not a mapping — write '- name: ...' with "
                "'event' and 'expect' below",
            )
            return None
        name = raw.get("name")
        label = f"test '{name}'" if isinstance(name, str) and name.strip() else f"test #{index}"
        ok = True
        for key in raw:
            if key not in TEST_KEYS:
                self.problem(
                    key_line(raw, str(key)),
                    label,
                    f"unknown key '{key}'{did_you_mean(str(key), TEST_KEYS)} "
                    f"(a test has {', '.join(TEST_KEYS)})",
                )
                ok = False
        if not isinstance(name, str) or not name.strip():
            self.problem(line, label, "needs 'name: <what it shows>', e.g. 'name: large is held'")
            ok = False
        event = self.mapping(raw, "event", label)
        scores = self.mapping(raw, "scores", label)
        windows = self.windows(raw, label)
        expect = self.expect(raw, label)
        if not ok or event is None or scores is None or windows is None or expect is None:
            return None
        assert isinstance(name, str)
        return RuleTest(
            name=name.strip(),
            event_type=self.event_type,
            source=SourceRef(self.file, line),
            event=plain(event),
            scores=plain(scores),
            windows=windows,
            expect=expect,
        )

    def mapping(self, raw: LineMap, key: str, label: str) -> Mapping[str, Any] | None:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(
                key_line(raw, key),
                label,
                f"'{key}' must be a mapping, e.g. '{key}: {{amount: 120}}', not {describe(value)}",
            )
            return None
        return value

    def windows(self, raw: LineMap, label: str) -> Mapping[str, float] | None:
        value = self.mapping(raw, "windows", label)
        if value is None:
            return None
        out: dict[str, float] = {}
        for name, number in value.items():
            if (
                isinstance(number, bool)
                or not isinstance(number, int | float)
                or not math.isfinite(number)
            ):
                self.problem(
                    key_line(raw, "windows"),
                    label,
                    f"window '{name}' needs a number, not {describe(number)}",
                )
                return None
            out[str(name)] = float(number)
        return out

    def expect(self, raw: LineMap, label: str) -> Expectation | None:
        value = raw.get("expect")
        line = key_line(raw, "expect")
        if not isinstance(value, LineMap) or not value:
            self.problem(
                line,
                label,
                "needs 'expect:' with at least 'decision: <word>' "
                f"(also possible: {', '.join(EXPECT_KEYS[1:])})",
            )
            return None
        ok = True
        for key in value:
            if key not in EXPECT_KEYS:
                self.problem(
                    key_line(value, str(key)),
                    label,
                    f"unknown key '{key}' in 'expect'{did_you_mean(str(key), EXPECT_KEYS)} "
                    f"(use {', '.join(EXPECT_KEYS)})",
                )
                ok = False
        decision = value.get("decision")
        if decision is not None and not isinstance(decision, str):
            self.problem(
                key_line(value, "decision"),
                label,
                f"'decision' must be a word, not {describe(decision)}",
            )
            ok = False
        fired = tags = None
        actions: tuple[Mapping[str, Any], ...] | None = None
        try:
            fired = self.words(value, "rules_fired", label)
        except _Skip:
            ok = False
        try:
            tags = self.words(value, "tags", label)
        except _Skip:
            ok = False
        try:
            actions = self.actions(value, label)
        except _Skip:
            ok = False
        if not ok:
            return None
        return Expectation(decision, fired, actions, tags)

    def words(self, expect: LineMap, key: str, label: str) -> tuple[str, ...] | None:
        """The list of names under ``key`` (None when absent)."""
        if key not in expect:
            return None
        value = expect[key]
        if isinstance(value, str):
            value = [value]
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(
                key_line(expect, key),
                label,
                f"'{key}' must be a list of names, e.g. '{key}: [a, b]', not {describe(value)}",
            )
            raise _Skip
        return tuple(value)

    def actions(self, expect: LineMap, label: str) -> tuple[Mapping[str, Any], ...] | None:
        """The expected actions in rule-file form (None when absent)."""
        if "actions" not in expect:
            return None
        value = expect["actions"]
        line = key_line(expect, "actions")
        if not isinstance(value, list):
            self.problem(line, label, f"'actions' must be a list, not {describe(value)}")
            raise _Skip
        return tuple(self.action(item, line_of(item, line), label) for item in value)

    def action(self, item: Any, at: int, label: str) -> Mapping[str, Any]:
        if not isinstance(item, Mapping) or len(item) != 1 or next(iter(item)) not in ACTION_KEYS:
            self.problem(
                at,
                label,
                f"an expected action is one of {', '.join(ACTION_KEYS)}, e.g. "
                f"'{{publish: fraud-alerts}}' or '{{tag: [vip]}}', not {describe(item)}",
            )
            raise _Skip
        kind, body = next(iter(item.items()))
        problem = None
        if kind in ("publish", "webhook") and not isinstance(body, str):
            problem = f"'{kind}' needs a name, not {describe(body)}"
        if kind == "set" and (not isinstance(body, Mapping) or not body):
            problem = f"'set' needs a mapping of fields, not {describe(body)}"
        if kind == "tag":
            body = [body] if isinstance(body, str) else body
            if not isinstance(body, list) or not all(isinstance(t, str) for t in body):
                problem = f"'tag' needs a list of words, not {describe(body)}"
        if problem is not None:
            self.problem(at, label, problem)
            raise _Skip
        return {kind: plain(body)}


class _Skip(Exception):
    """A test definition is unusable; the problem is already recorded."""


def _read_file(
    path: Path, known_types: Collection[str]
) -> tuple[list[RuleTest], list[RuleProblem]]:
    display = str(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [], []  # `check_rules` reports unreadable files
    if not isinstance(data, LineMap) or "tests" not in data:
        return [], []
    event_type = data.get("ruleset")
    if not isinstance(event_type, str) or event_type not in known_types:
        return [], []  # an unknown ruleset type is reported by `check_rules`
    reader = _Reader(display, event_type)
    tests = reader.tests(data["tests"], key_line(data, "tests"))
    return tests, reader.problems


def read_tests(
    rules_dir: Path, known_types: Collection[str]
) -> tuple[list[RuleTest], list[RuleProblem]]:
    """Every test of every rule file in ``rules_dir`` (file-name order, then file order),
    and every problem with how a test is written."""
    tests: list[RuleTest] = []
    problems: list[RuleProblem] = []
    if not Path(rules_dir).is_dir():
        return tests, problems
    paths = sorted(p for p in Path(rules_dir).iterdir() if p.suffix in (".yaml", ".yml"))
    for path in paths:
        if path.is_file():
            found, bad = _read_file(path, known_types)
            tests.extend(found)
            problems.extend(bad)
    return tests, problems
