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

The values are in ``app.rules.authoring.cases``; reading the ``tests:`` of the files is
``app.rules.authoring.case_reader``; this module runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.declarations import EventTypes
from app.declarations.yamlsrc import describe, did_you_mean
from app.rules.authoring.case_reader import read_tests
from app.rules.authoring.cases import (
    CaseResult,
    Coverage,
    Difference,
    Expectation,
    RuleTest,
    RuleTestReport,
    deep_merge,
)
from app.rules.language.spec import RuleSet
from app.rules.loader import check_rules
from app.rules.runtime.engine import RulesEngine
from app.rules.runtime.result import RuleResult
from schemas import EventCore

__all__ = ["build_fact", "compare", "coverage", "evaluate_tests", "format_action", "run_rule_tests"]


def _location(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "(the event)"


# Per event type: the model that validates a test's event, and the event the test's
# fields are written over.
Subjects = Mapping[str, tuple[type[EventCore], Mapping[str, Any]]]


def subjects_of(types: EventTypes) -> dict[str, tuple[type[EventCore], Mapping[str, Any]]]:
    """A served type's tests start from the ``example`` its declaration gives (or from
    nothing: the test then writes the whole event)."""
    return {t: (types.models[t], types.spec(t).example or {}) for t in types.names}


def build_fact(
    test: RuleTest,
    ruleset: RuleSet,
    score_types: Mapping[str, str],
    subjects: Subjects,
) -> tuple[dict[str, Any] | None, str | None]:
    """The fact the engine sees for ``test`` (``{**event, "scores": ..., "windows": ...}``),
    or None and an error naming the field, score or window that is wrong."""
    model, base = subjects[test.event_type]
    merged = deep_merge(base, test.event)
    try:
        event = model.model_validate(merged)
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
    subjects: Subjects,
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
        fact, error = build_fact(test, ruleset, score_types.get(test.event_type, {}), subjects)
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
    types: EventTypes,
) -> RuleTestReport:
    """Check the rule files in ``rules_dir``, run every test in them (against the served
    event types ``types``), measure coverage."""
    subjects = subjects_of(types)
    rulesets, problems = check_rules(rules_dir, field_types, score_types)
    tests, test_problems = read_tests(rules_dir, known_types=tuple(subjects))
    tests = [t for t in tests if t.event_type in field_types]
    results = evaluate_tests(tests, rulesets, score_types, subjects)
    return RuleTestReport(
        problems=tuple(problems) + tuple(test_problems),
        results=tuple(results),
        coverage=coverage(rulesets, results),
    )
