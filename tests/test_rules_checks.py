"""Each new check error class is reported with its file, line, rule and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from app.rules.language.spec import RuleProblem
from app.rules.loader import check_rules
from app.simulator.shapes import EVENT_MODELS, field_types
from tests.shipped import SCORE_TYPES

TX_ONLY = {"transaction": field_types("transaction")}
assert "transaction" in EVENT_MODELS

HEAD = "ruleset: transaction\ndefault: {decision: approve, reason: ok}\nrules:\n"


def problems_for(tmp_path: Path, text: str) -> tuple[Path, list[RuleProblem]]:
    path = tmp_path / "tx.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    _, problems = check_rules(tmp_path, TX_ONLY, SCORE_TYPES)
    return path, problems


def only(problems: list[RuleProblem]) -> RuleProblem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def rule_with(line: str) -> str:
    """A file whose single rule (named r, at line 4) has ``line`` as its 6th line."""
    return HEAD + f"  - name: r\n    when: {{field: amount, gt: 1}}\n    decision: x\n    {line}\n"


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{field: merchant, matches: 'casino(+'}", "bad regular expression at position"),
        ("{field: amount, matches: 'x'}", "is not text"),
        ("{field: amount, gt: {expr: '3 * '}}", "bad expression at column 5"),
        ("{field: amount, gt: {expr: '3 * (attributes.a'}}", "expected ')'"),
        ("{field: amount, gt: {expr: '3 * channel'}}", "mixes types"),
        ("{field: channel, eq: {expr: '3 * amount'}}", "mixing types"),
        ("{field: amount, gt: {expr: '3 * amout'}}", "did you mean 'amount'?"),
        ("{field: amount, gt: {expr: 'amount; import os'}}", "unexpected character ';'"),
        ("{field: windows.nope, gt: 1}", "unknown window 'windows.nope'"),
        ("{field: card_country, exists: false}", "takes 'true'"),
        ("{field: amount, contains: 5}", "'contains' looks in text"),
        ("{field: items, contains: x}", "unknown field"),
    ],
)
def test_bad_conditions_are_refused_at_their_line(tmp_path: Path, when: str, expected: str) -> None:
    """Bad regexes, expressions, type mixes, windows and operands name line and fix."""
    path, problems = problems_for(
        tmp_path, HEAD + f"  - name: r\n    when: {when}\n    decision: x\n"
    )
    problem = only(problems)
    assert (problem.file, problem.line, problem.rule) == (str(path), 5, "r")
    assert expected in problem.message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("actions: [{publsh: alerts}]", "unknown action 'publsh' — did you mean 'publish'?"),
        ("actions: [{publish: 'bad topic!'}]", "Kafka topic name"),
        ("actions: [{webhook: Case-Mgmt}]", "connector name"),
        ("actions: [{set: {queue: [a, b]}}]", "must be text, a number or true/false"),
        ("actions: [{tag: {a: 1}}]", "'tag' needs a list"),
        ("reason: 'Amount {amout}'", "did you mean 'amount'?"),
        ("reason: 'Fraud {scores.fraud:q}'", "does not fit a number"),
        ("reason: 'Bad {amount!r}'", "conversion"),
        ("reason: 'Items {device}'", "several values"),
        ("priority: high", "'priority' must be a whole number"),
    ],
)
def test_bad_actions_reasons_and_priorities_are_refused(
    tmp_path: Path, line: str, expected: str
) -> None:
    """Unknown actions, bad topic/webhook names, placeholders and priorities are errors."""
    path, problems = problems_for(tmp_path, rule_with(line))
    problem = only(problems)
    assert (problem.file, problem.line, problem.rule) == (str(path), 7, "r")
    assert expected in problem.message


def test_rule_without_decision_is_refused_in_stop_mode_only(tmp_path: Path) -> None:
    """An action-only rule needs 'mode: collect'."""
    body = "  - {name: r, when: {field: amount, gt: 1}, actions: [{tag: [x]}]}\n"
    path, problems = problems_for(tmp_path, HEAD + body)
    problem = only(problems)
    assert (problem.file, problem.line, problem.rule) == (str(path), 4, "r")
    assert "mode: collect" in problem.message
    _, problems = problems_for(tmp_path, HEAD.replace("rules:", "mode: collect\nrules:") + body)
    assert problems == []


def test_identical_condition_is_unreachable_even_at_lower_priority(tmp_path: Path) -> None:
    """Stop mode: a higher-priority rule with the same condition hides a rule above it."""
    path, problems = problems_for(
        tmp_path,
        HEAD
        + "  - {name: first, when: {field: amount, gt: 1}, decision: x}\n"
        + "  - {name: second, priority: 2, when: {field: amount, gt: 1}, decision: y}\n",
    )
    problem = only(problems)
    assert (problem.file, problem.line, problem.rule) == (str(path), 4, "first")
    assert "rule 'second'" in problem.message
    assert "higher priority (2 > 0)" in problem.message


def test_narrower_rule_below_a_broader_one_of_equal_priority_is_unreachable(
    tmp_path: Path,
) -> None:
    """amount > 5000 written below amount > 1000 (same priority) can never fire."""
    _, problems = problems_for(
        tmp_path,
        HEAD
        + "  - {name: broad, when: {field: amount, gt: 1000}, decision: x}\n"
        + "  - name: narrow\n"
        + "    when: {all: [{field: amount, gt: 5000}, {field: channel, eq: web}]}\n"
        + "    decision: y\n",
    )
    problem = only(problems)
    assert (problem.line, problem.rule) == (5, "narrow")
    assert "broader condition" in problem.message


def test_shadowing_is_allowed_in_collect_mode_and_for_higher_priority_overrides(
    tmp_path: Path,
) -> None:
    """collect fires both; a deliberately higher-priority broad rule is an override."""
    rules = (
        "  - {name: a, when: {field: amount, gt: 1}, decision: x}\n"
        "  - {name: b, when: {field: amount, gt: 1}, decision: y}\n"
    )
    _, problems = problems_for(tmp_path, HEAD.replace("rules:", "mode: collect\nrules:") + rules)
    assert problems == []
    override = (
        "  - {name: audit, priority: 100, when: {field: amount, gte: 0}, decision: hold}\n"
        "  - {name: big, when: {field: amount, gt: 1000}, decision: review}\n"
    )
    _, problems = problems_for(tmp_path, HEAD + override)
    assert problems == []


def test_table_row_with_wrong_number_of_cells_points_at_the_row(tmp_path: Path) -> None:
    """A row needs one cell per input; the problem names '<table>.<row>' and its line."""
    path, problems = problems_for(
        tmp_path,
        """\
        ruleset: transaction
        default: {decision: approve, reason: ok}
        tables:
          - name: band
            inputs: [amount, channel]
            rows:
              - when: [{gte: 1}, pos]
                decision: a
              - when: [{gte: 5000}]
                decision: b
        """,
    )
    problem = only(problems)
    assert (problem.file, problem.line, problem.rule) == (str(path), 9, "band.2")
    assert "has 1 cells but the table has 2 inputs" in problem.message


def test_table_cell_errors_point_at_the_row(tmp_path: Path) -> None:
    """A bad cell is reported with the row's rule name."""
    _, problems = problems_for(
        tmp_path,
        """\
        ruleset: transaction
        default: {decision: approve, reason: ok}
        tables:
          - name: band
            inputs: [amount]
            rows:
              - when: [{gtt: 1}]
                decision: a
        """,
    )
    problem = only(problems)
    assert (problem.line, problem.rule) == (7, "band.1")
    assert "did you mean 'gt'?" in problem.message


def test_unknown_mode_suggests_the_right_one(tmp_path: Path) -> None:
    """'mode: colect' gets a did-you-mean."""
    _, problems = problems_for(tmp_path, HEAD.replace("rules:", "mode: colect") + "\n")
    problem = only(problems)
    assert problem.line == 3
    assert "did you mean 'collect'?" in problem.message


def test_unknown_window_suggests_a_declared_one(tmp_path: Path) -> None:
    """windows.<name> must be declared; a near miss gets a did-you-mean."""
    _, problems = problems_for(
        tmp_path,
        """\
        ruleset: transaction
        default: {decision: approve, reason: ok}
        windows:
          - {name: tx_10m, within: 10m, count: true}
        rules:
          - {name: r, when: {field: windows.tx_10n, gt: 3}, decision: review}
        """,
    )
    problem = only(problems)
    assert (problem.line, problem.rule) == (6, "r")
    assert "did you mean 'windows.tx_10m'?" in problem.message
