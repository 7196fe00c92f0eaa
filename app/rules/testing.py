"""Rule-file tests: the ``tests:`` section of a rule file, run by ``arbiter rules test``.

A test is a partial event merged onto a built-in valid sample of the ruleset's event type,
optional model scores and window values, and what the rules should do with it::

    tests:
      - name: a very high fraud score is declined
        event: {amount: 120, device: {is_new: true}}   # mappings merge, lists replace
        scores: {fraud: 0.95}                          # scores not given are absent
        windows: {countries_over_500_10m: 3}           # windows not given read 0
        expect:
          decision: decline
          rules_fired: [decline_very_likely_fraud]     # the exact list, in firing order
          actions: [{publish: fraud-alerts}]           # each listed action is present
          tags: [fraud]                                # each listed tag is present

The merged event is validated against the real event schema (an invalid one is a test
error naming the field), then every test of a ruleset runs as one batch through a
``RulesEngine`` built from the checked rules. Besides pass/fail, the report tells which
rules no test made fire (coverage). Nothing here prints: ``app.cli.rules`` renders the report.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.rules.engine import RuleResult, RulesEngine
from app.rules.loader import check_rules
from app.rules.spec import RuleProblem, RuleSet, SourceRef
from app.rules.yamlsrc import LineLoader, LineMap, describe, did_you_mean, key_line, line_of
from schemas import EVENT_MODELS

__all__ = [
    "SAMPLE_EVENTS",
    "CaseResult",
    "Coverage",
    "Difference",
    "Expectation",
    "RuleTest",
    "RuleTestReport",
    "deep_merge",
    "format_action",
    "read_tests",
    "run_rule_tests",
    "sample_event",
]

TEST_KEYS = ("name", "event", "scores", "windows", "expect")
EXPECT_KEYS = ("decision", "rules_fired", "actions", "tags")
ACTION_KEYS = ("publish", "webhook", "set", "tag")

# The valid event each test's ``event`` is merged onto: plain, low-risk, no attributes.
SAMPLE_EVENTS: Mapping[str, Mapping[str, Any]] = {
    "transaction": {
        "event_id": "test-transaction",
        "occurred_at": "2026-03-02T12:00:00Z",
        "attributes": {},
        "account_id": "acct-test",
        "amount": 42.0,
        "currency": "EUR",
        "merchant": "Corner Grocer",
        "merchant_category": "grocery",
        "channel": "card_present",
        "country": "DE",
        "card_country": "DE",
        "device": {"device_id": "pos-test", "kind": "pos", "is_new": False},
    },
    "order": {
        "event_id": "test-order",
        "occurred_at": "2026-03-02T12:00:00Z",
        "attributes": {},
        "customer_id": "cust-test",
        "items": [{"sku": "SKU-00001", "quantity": 1, "unit_price": 25.0}],
        "total": 25.0,
        "currency": "EUR",
        "payment_method": "card",
        "billing_country": "DE",
        "shipping_country": "DE",
        "first_order": False,
    },
    "ticket": {
        "event_id": "test-ticket",
        "occurred_at": "2026-03-02T12:00:00Z",
        "attributes": {},
        "customer_id": "cust-test",
        "channel": "email",
        "subject": "A question",
        "body": "Hello, I have a question about your service.",
        "customer_tier": "standard",
    },
}


def sample_event(event_type: str) -> dict[str, Any]:
    """A fresh copy of the sample event of ``event_type`` (JSON form)."""
    return copy.deepcopy(dict(SAMPLE_EVENTS[event_type]))


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merge key by key, anything else
    (numbers, text, lists) replaces. Neither input is changed."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = copy.deepcopy(_plain(value))
    return out


def _plain(value: Any) -> Any:
    """YAML's ``LineMap`` as a plain dict, recursively (pydantic and JSON want plain)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --- the values ------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What a test expects; None means "not checked". ``actions`` are in rule-file form
    (``{"publish": "fraud-alerts"}``, ``{"set": {"queue": "x"}}``, ``{"tag": ["a"]}``)."""

    decision: str | None = None
    rules_fired: tuple[str, ...] | None = None
    actions: tuple[Mapping[str, Any], ...] | None = None
    tags: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RuleTest:
    """One test as written: ``event`` is the partial event (before merging)."""

    name: str
    event_type: str
    source: SourceRef
    event: Mapping[str, Any]
    scores: Mapping[str, Any]
    windows: Mapping[str, float]
    expect: Expectation


@dataclass(frozen=True)
class Difference:
    """One expectation that did not hold: ``what`` is decision/rules_fired/actions/tags;
    ``missing`` lists the expected actions or tags that were not there."""

    what: str
    expected: Any
    actual: Any
    missing: tuple[Any, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """How one test went. ``error`` (the test could not run: invalid event, unknown score)
    and ``differences`` (it ran and something else happened) both mean it failed."""

    test: RuleTest
    result: RuleResult | None = None
    differences: tuple[Difference, ...] = ()
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and not self.differences


@dataclass(frozen=True)
class Coverage:
    """Which rules of one ruleset (in evaluation order) at least one test made fire."""

    event_type: str
    rules: tuple[str, ...]
    exercised: frozenset[str]

    @property
    def not_exercised(self) -> tuple[str, ...]:
        return tuple(r for r in self.rules if r not in self.exercised)

    @property
    def line(self) -> str:
        """``transaction: 5/7 rules exercised; not exercised: a, b``."""
        done = len(self.rules) - len(self.not_exercised)
        text = f"{self.event_type}: {done}/{len(self.rules)} rules exercised"
        if self.not_exercised:
            text += f"; not exercised: {', '.join(self.not_exercised)}"
        return text


@dataclass(frozen=True)
class RuleTestReport:
    """Everything ``arbiter rules test`` shows: rule-file and test-definition problems,
    one result per test (file order), and coverage per ruleset (by event type)."""

    problems: tuple[RuleProblem, ...]
    results: tuple[CaseResult, ...]
    coverage: tuple[Coverage, ...]

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed


# --- reading tests ---------------------------------------------------------------------


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
            event=_plain(event),
            scores=_plain(scores),
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
        return {kind: _plain(body)}


class _Skip(Exception):
    """A test definition is unusable; the problem is already recorded."""


def _read_file(path: Path) -> tuple[list[RuleTest], list[RuleProblem]]:
    display = str(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [], []  # `check_rules` reports unreadable files
    if not isinstance(data, LineMap) or "tests" not in data:
        return [], []
    event_type = data.get("ruleset")
    if not isinstance(event_type, str) or event_type not in EVENT_MODELS:
        return [], []  # an unknown ruleset type is reported by `check_rules`
    reader = _Reader(display, event_type)
    tests = reader.tests(data["tests"], key_line(data, "tests"))
    return tests, reader.problems


def read_tests(rules_dir: Path) -> tuple[list[RuleTest], list[RuleProblem]]:
    """Every test of every rule file in ``rules_dir`` (file-name order, then file order),
    and every problem with how a test is written."""
    tests: list[RuleTest] = []
    problems: list[RuleProblem] = []
    if not Path(rules_dir).is_dir():
        return tests, problems
    paths = sorted(p for p in Path(rules_dir).iterdir() if p.suffix in (".yaml", ".yml"))
    for path in paths:
        if path.is_file():
            found, bad = _read_file(path)
            tests.extend(found)
            problems.extend(bad)
    return tests, problems


# --- running them ----------------------------------------------------------------------


def _location(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "(the event)"


def build_fact(
    test: RuleTest, ruleset: RuleSet, score_types: Mapping[str, str]
) -> tuple[dict[str, Any] | None, str | None]:
    """The fact the engine sees for ``test`` (``{**event, "scores": ..., "windows": ...}``),
    or None and an error naming the field, score or window that is wrong."""
    merged = deep_merge(sample_event(test.event_type), test.event)
    try:
        event = EVENT_MODELS[test.event_type].model_validate(merged)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            where = _location(error["loc"])
            hint = (
                f" — '{where}' is not a field of {test.event_type} events"
                if error["type"] == "extra_forbidden"
                else ""
            )
            parts.append(f"field '{where}': {error['msg']}{hint}")
        return None, f"invalid test event: {'; '.join(parts)}"
    for name, value in test.scores.items():
        kind = score_types.get(str(name))
        if kind is None:
            known = ", ".join(score_types) or "none"
            return None, (
                f"unknown score '{name}'{did_you_mean(str(name), list(score_types))} "
                f"for {test.event_type} events (known: {known})"
            )
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if (kind == "number" and not is_number) or (
            kind == "string" and not isinstance(value, str)
        ):
            return None, f"score '{name}' must be a {kind}, not {describe(value)}"
    declared = [w.name for w in ruleset.windows if w.target_type == test.event_type]
    for name in test.windows:
        if name not in declared:
            known = ", ".join(declared) or "none"
            return None, (
                f"unknown window '{name}'{did_you_mean(name, declared)} for the "
                f"{test.event_type} ruleset (declared: {known})"
            )
    windows = {name: float(test.windows.get(name, 0.0)) for name in declared}
    return {**event.model_dump(mode="json"), "scores": dict(test.scores), "windows": windows}, None


def _present(expected: Mapping[str, Any], actions: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the expected action (rule-file form) is among the result's actions."""
    kind, body = next(iter(expected.items()))
    for action in actions:
        if action.get("type") != kind:
            continue
        if kind == "publish" and action.get("topic") == body:
            return True
        if kind == "webhook" and action.get("name") == body:
            return True
        if kind == "set":
            values = action.get("values", {})
            if all(k in values and _same(values[k], v) for k, v in body.items()):
                return True
        if kind == "tag" and all(t in action.get("tags", ()) for t in body):
            return True
    return False


def _same(actual: Any, wanted: Any) -> bool:
    """Equality that keeps true apart from 1."""
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return isinstance(actual, bool) and isinstance(wanted, bool) and actual is wanted
    return bool(actual == wanted)


def format_action(action: Mapping[str, Any]) -> str:
    """One action as a rule file writes it: ``publish: fraud-alerts``, ``tag: [a, b]``,
    ``set: {queue: billing}``; accepts the result form (``{"type": ...}``) too."""
    if "type" in action:
        kind = str(action["type"])
        body: Any = {
            "publish": action.get("topic"),
            "webhook": action.get("name"),
            "set": action.get("values"),
            "tag": action.get("tags"),
        }.get(kind)
    else:
        kind, body = next(iter(action.items()))
    if isinstance(body, Mapping):
        shown = "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in body.items()) + "}"
    elif isinstance(body, list | tuple):
        shown = "[" + ", ".join(str(v) for v in body) + "]"
    else:
        shown = str(body)
    return f"{kind}: {shown}"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compare(expect: Expectation, result: RuleResult) -> tuple[Difference, ...]:
    """Every expectation ``result`` does not meet."""
    out: list[Difference] = []
    if expect.decision is not None and expect.decision != result.decision:
        out.append(Difference("decision", expect.decision, result.decision))
    if expect.rules_fired is not None and expect.rules_fired != result.rules_fired:
        out.append(Difference("rules_fired", expect.rules_fired, result.rules_fired))
    if expect.actions is not None:
        missing = tuple(a for a in expect.actions if not _present(a, result.actions))
        if missing:
            out.append(Difference("actions", expect.actions, result.actions, missing))
    if expect.tags is not None:
        tags = [t for a in result.actions if a.get("type") == "tag" for t in a.get("tags", ())]
        missing_tags = tuple(t for t in expect.tags if t not in tags)
        if missing_tags:
            out.append(Difference("tags", expect.tags, tuple(tags), missing_tags))
    return tuple(out)


def evaluate_tests(
    tests: Sequence[RuleTest],
    rulesets: Mapping[str, RuleSet],
    score_types: Mapping[str, Mapping[str, str]],
) -> list[CaseResult]:
    """Run ``tests`` against ``rulesets`` (one batch per event type); results in the
    order of ``tests``. A test whose ruleset is not in ``rulesets`` is an error."""
    results: dict[int, CaseResult] = {}
    runnable: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, test in enumerate(tests):
        ruleset = rulesets.get(test.event_type)
        if ruleset is None:
            results[index] = CaseResult(
                test,
                error=f"not run: the {test.event_type} ruleset has problems (listed above) "
                "— fix them first",
            )
            continue
        fact, error = build_fact(test, ruleset, score_types.get(test.event_type, {}))
        if fact is None:
            results[index] = CaseResult(test, error=error)
        else:
            runnable.setdefault(test.event_type, []).append((index, fact))
    if runnable:
        engine = RulesEngine({t: rulesets[t] for t in runnable})
        try:
            for event_type, items in runnable.items():
                outcomes = engine.evaluate(event_type, [fact for _, fact in items])
                for (index, _), outcome in zip(items, outcomes, strict=True):
                    test = tests[index]
                    results[index] = CaseResult(test, outcome, compare(test.expect, outcome))
        finally:
            engine.close()
    return [results[i] for i in range(len(tests))]


def coverage(
    rulesets: Mapping[str, RuleSet], results: Sequence[CaseResult]
) -> tuple[Coverage, ...]:
    """Per ruleset (by event type), which rules fired in at least one test."""
    fired: dict[str, set[str]] = {}
    for case in results:
        if case.result is not None:
            fired.setdefault(case.test.event_type, set()).update(case.result.rules_fired)
    return tuple(
        Coverage(
            event_type,
            tuple(rule.name for rule in ruleset.rules),
            frozenset(fired.get(event_type, set())),
        )
        for event_type, ruleset in sorted(rulesets.items())
    )


def run_rule_tests(
    rules_dir: Path,
    field_types: Mapping[str, Mapping[str, str]],
    score_types: Mapping[str, Mapping[str, str]],
) -> RuleTestReport:
    """Check the rule files in ``rules_dir``, run every test in them, measure coverage."""
    rulesets, problems = check_rules(rules_dir, field_types, score_types)
    tests, test_problems = read_tests(rules_dir)
    tests = [t for t in tests if t.event_type in field_types]
    results = evaluate_tests(tests, rulesets, score_types)
    return RuleTestReport(
        problems=tuple(problems) + tuple(test_problems),
        results=tuple(results),
        coverage=coverage(rulesets, results),
    )
