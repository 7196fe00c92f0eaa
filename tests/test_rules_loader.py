"""Rule files → RuleSets, and every problem reported with its file, line, rule and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.rules.language.spec import AllOf, AnyOf, Compare, Not, RuleProblem
from app.rules.loader import check_rules, load_rulesets
from app.simulator.shapes import EVENT_MODELS, field_types
from tests.shipped import SCORE_TYPES

REPO_RULES = Path(__file__).resolve().parent.parent / "rules"

# Mirrors schemas.field_types(event_type) for the shipped event schemas.
FIELD_TYPES = {t: field_types(t) for t in EVENT_MODELS}

TX_ONLY = {"transaction": FIELD_TYPES["transaction"]}

GOOD_HEAD = """\
ruleset: transaction
default:
  decision: approve
  reason: Nothing matched.
rules:
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_for(tmp_path: Path, files: dict[str, str]) -> list[RuleProblem]:
    for name, text in files.items():
        write(tmp_path, name, text)
    _, problems = check_rules(tmp_path, TX_ONLY, SCORE_TYPES)
    return problems


def only(problems: list[RuleProblem]) -> RuleProblem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_shipped_rule_files_load_without_problems() -> None:
    """The rule files in rules/ pass every check against the real field and score tables."""
    rulesets, problems = check_rules(REPO_RULES, FIELD_TYPES, SCORE_TYPES)
    assert [str(p) for p in problems] == []
    assert sorted(rulesets) == ["order", "ticket", "transaction"]
    assert rulesets["ticket"].default_decision == "route_general"


def test_valid_file_becomes_a_ruleset_with_sources_and_version(tmp_path: Path) -> None:
    """Conditions become typed values; each rule remembers its file and line."""
    path = write(
        tmp_path,
        "tx.yaml",
        GOOD_HEAD
        + """\
  - name: big
    when:
      all:
        - {field: amount, gt: 2000}
        - any:
            - {field: device.is_new, eq: true}
            - not: {field: channel, in: [pos]}
    decision: review
    reason: Big.
""",
    )
    rulesets, problems = check_rules(tmp_path, TX_ONLY, SCORE_TYPES)
    assert problems == []
    ruleset = rulesets["transaction"]
    (rule,) = ruleset.rules
    assert rule.when == AllOf(
        (
            Compare("amount", "gt", 2000),
            AnyOf((Compare("device.is_new", "eq", True), Not(Compare("channel", "in", ("pos",))))),
        )
    )
    assert rule.source.file == str(path)
    assert rule.source.line == 6
    assert (ruleset.default_decision, ruleset.default_reason) == ("approve", "Nothing matched.")
    assert len(ruleset.version) == 12
    assert ruleset.files == (str(path),)


def test_version_ignores_comments_and_changes_with_content(tmp_path: Path) -> None:
    """Reformatting keeps the version; changing a threshold changes it."""
    body = GOOD_HEAD + "  - {name: r, when: {field: amount, gt: 5}, decision: review}\n"
    write(tmp_path, "tx.yaml", body)
    first = load_rulesets(tmp_path, TX_ONLY, SCORE_TYPES)["transaction"].version
    write(tmp_path, "tx.yaml", "# a comment\n" + body)
    assert load_rulesets(tmp_path, TX_ONLY, SCORE_TYPES)["transaction"].version == first
    write(tmp_path, "tx.yaml", body.replace("gt: 5", "gt: 6"))
    assert load_rulesets(tmp_path, TX_ONLY, SCORE_TYPES)["transaction"].version != first


def test_files_for_one_type_are_merged_in_file_name_order(tmp_path: Path) -> None:
    """Two files declaring the same ruleset contribute rules in file-name order."""
    write(
        tmp_path,
        "a.yaml",
        GOOD_HEAD + "  - {name: one, when: {field: amount, gt: 1}, decision: x}\n",
    )
    write(
        tmp_path,
        "b.yaml",
        "ruleset: transaction\nrules:\n"
        "  - {name: two, when: {field: amount, lt: 2}, decision: y}\n",
    )
    ruleset = load_rulesets(tmp_path, TX_ONLY, SCORE_TYPES)["transaction"]
    assert [r.name for r in ruleset.rules] == ["one", "two"]
    assert ruleset.files == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error names the line and column (and the type it may have declared)."""
    problems = problems_for(tmp_path, {"tx.yaml": GOOD_HEAD + "  - name: x\n    when: [unclosed\n"})
    syntax, missing = problems
    assert syntax.file == str(tmp_path / "tx.yaml")
    assert syntax.line is not None
    assert syntax.line >= 7
    assert "YAML syntax error column" in syntax.message
    assert f"or fix {tmp_path / 'tx.yaml'}" in missing.message


def test_missing_ruleset_key_lists_known_types(tmp_path: Path) -> None:
    """A file without 'ruleset' is reported and the known types are listed."""
    problems = problems_for(tmp_path, {"tx.yaml": "default: {decision: a, reason: b}\n"})
    first = problems[0]
    assert (first.file, first.line) == (str(tmp_path / "tx.yaml"), 1)
    assert "missing 'ruleset'" in first.message
    assert "transaction" in first.message


def test_unknown_event_type_suggests_and_lists_known_types(tmp_path: Path) -> None:
    """A misspelt event type gets a did-you-mean and the list of known types."""
    write(tmp_path, "tx.yaml", "ruleset: transactoin\ndefault: {decision: a, reason: b}\n")
    _, problems = check_rules(tmp_path, FIELD_TYPES, SCORE_TYPES)
    problem = problems[0]
    assert problem.line == 1
    assert "did you mean 'transaction'?" in problem.message
    assert "known types: order, ticket, transaction" in problem.message


def test_missing_default_is_reported_at_the_ruleset_line(tmp_path: Path) -> None:
    """A ruleset without a default decision is refused."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "tx.yaml": "ruleset: transaction\nrules:\n"
                "  - {name: r, when: {field: amount, gt: 1}, decision: x}\n"
            },
        )
    )
    assert problem.line == 1
    assert "no 'default'" in problem.message


@pytest.mark.parametrize(
    ("rule", "missing"),
    [
        ("  - {when: {field: amount, gt: 1}, decision: x}\n", "name"),
        ("  - {name: r, when: {field: amount, gt: 1}}\n", "decision"),
        ("  - {name: r, decision: x}\n", "when"),
    ],
)
def test_missing_rule_keys_are_reported(tmp_path: Path, rule: str, missing: str) -> None:
    """A rule without name, decision or when is reported at its line."""
    problem = only(problems_for(tmp_path, {"tx.yaml": GOOD_HEAD + rule}))
    assert problem.line == 6
    assert f"'{missing}'" in problem.message


def test_duplicate_rule_names_across_files_are_an_error(tmp_path: Path) -> None:
    """The same rule name twice in one ruleset names both places."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "a.yaml": GOOD_HEAD + "  - {name: r, when: {field: amount, gt: 1}, decision: x}\n",
                "b.yaml": "ruleset: transaction\nrules:\n"
                "  - {name: r, when: {field: amount, gt: 2}, decision: y}\n",
            },
        )
    )
    assert (problem.file, problem.line, problem.rule) == (str(tmp_path / "b.yaml"), 3, "r")
    assert f"first at {tmp_path / 'a.yaml'}:6" in problem.message


def test_typo_in_rule_key_suggests_the_right_key(tmp_path: Path) -> None:
    """'decison' is reported with "did you mean 'decision'?" on its own line."""
    problems = problems_for(
        tmp_path,
        {"tx.yaml": GOOD_HEAD + "  - name: r\n    when: {field: amount, gt: 1}\n    decison: x\n"},
    )
    typo = next(p for p in problems if "decison" in p.message)
    assert (typo.line, typo.rule) == (8, "r")
    assert "did you mean 'decision'?" in typo.message
    assert str(typo).startswith(f"{tmp_path / 'tx.yaml'}:8 rule 'r': unknown key 'decison'")


def test_two_operators_in_one_comparison_are_refused(tmp_path: Path) -> None:
    """A comparison must have exactly one operator."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "tx.yaml": GOOD_HEAD
                + "  - name: r\n    when: {field: amount, gt: 1, lt: 5}\n    decision: x\n"
            },
        )
    )
    assert problem.line == 7
    assert "keep exactly one" in problem.message


def test_unknown_operator_suggests_a_known_one(tmp_path: Path) -> None:
    """'gte' misspelt as 'gtee' gets a did-you-mean."""
    problems = problems_for(
        tmp_path,
        {
            "tx.yaml": GOOD_HEAD
            + "  - name: r\n    when: {field: amount, gtee: 1}\n    decision: x\n"
        },
    )
    assert any("did you mean 'gte'?" in p.message and p.line == 7 for p in problems)


def test_unknown_field_suggests_the_closest_field(tmp_path: Path) -> None:
    """'amout' → "did you mean 'amount'?" with the known fields listed."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "tx.yaml": GOOD_HEAD + "  - name: review_large\n    when:\n      all:\n"
                "        - {field: amout, gt: 1}\n    decision: x\n"
            },
        )
    )
    assert (problem.line, problem.rule) == (9, "review_large")
    assert "unknown field 'amout' for transaction events — did you mean 'amount'?" in str(problem)
    assert "known: " in problem.message


def test_unknown_score_suggests_the_closest_score(tmp_path: Path) -> None:
    """'scores.fruad' → "did you mean 'scores.fraud'?"."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "tx.yaml": GOOD_HEAD
                + "  - name: r\n    when: {field: scores.fruad, gt: 0.5}\n    decision: x\n"
            },
        )
    )
    assert problem.line == 7
    assert "did you mean 'scores.fraud'?" in problem.message


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{field: channel, eq: 5}", "compare it with text"),
        ("{field: device.is_new, gt: 1}", "cannot be ordered"),
        ("{field: amount, in: 5}", "needs a non-empty list"),
        ("{field: amount, eq: [1, 2]}", "use 'in'"),
        ("{field: amount, gt: '100'}", "compares numbers"),
        ("{field: country, eq: NO}", "quote it"),
        ("{field: occurred_at, gt: 5}", "timestamp"),
        ("{field: device, eq: x}", "compare one of its fields"),
        ("{field: attributes.x, in: [a, 1]}", "mixes"),
    ],
)
def test_type_mismatches_are_refused(tmp_path: Path, condition: str, expected: str) -> None:
    """Comparisons that do not fit the field's type are refused with the fix."""
    problem = only(
        problems_for(
            tmp_path,
            {"tx.yaml": GOOD_HEAD + f"  - name: r\n    when: {condition}\n    decision: x\n"},
        )
    )
    assert problem.line == 7
    assert expected in problem.message


def test_nested_list_index_and_attributes_paths_resolve() -> None:
    """'items.0.sku' matches 'items.*.sku'; any 'attributes.*' key is allowed."""
    from app.rules.language.conditions import field_kind

    assert field_kind(FIELD_TYPES["order"], "items.0.sku") == "string"
    assert field_kind(FIELD_TYPES["order"], "attributes.income") == "any"
    assert field_kind(FIELD_TYPES["order"], "items.sku") is None


def test_one_field_compared_with_two_kinds_is_refused(tmp_path: Path) -> None:
    """An 'any' attribute compared with a number and with text in one ruleset is refused."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "tx.yaml": GOOD_HEAD
                + "  - {name: a, when: {field: attributes.x, gt: 1}, decision: x}\n"
                "  - {name: b, when: {field: attributes.x, eq: y}, decision: x}\n"
            },
        )
    )
    assert (problem.line, problem.rule) == (7, "b")
    assert "rule 'a'" in problem.message


def test_rule_shadowed_by_identical_earlier_condition_is_unreachable(tmp_path: Path) -> None:
    """A rule whose condition equals an earlier rule's can never match and is refused."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "tx.yaml": GOOD_HEAD
                + "  - {name: first, when: {field: amount, gt: 1}, decision: x}\n"
                "  - {name: second, when: {field: amount, gt: 1}, decision: y}\n"
            },
        )
    )
    assert (problem.line, problem.rule) == (7, "second")
    assert "can never match" in problem.message
    assert "rule 'first'" in problem.message


def test_event_type_without_rule_files_is_reported(tmp_path: Path) -> None:
    """Every event type the service runs needs a ruleset."""
    write(
        tmp_path,
        "tx.yaml",
        GOOD_HEAD + "  - {name: r, when: {field: amount, gt: 1}, decision: x}\n",
    )
    _, problems = check_rules(tmp_path, FIELD_TYPES, SCORE_TYPES)
    messages = sorted(p.message for p in problems)
    assert len(messages) == 2
    assert "ruleset: order" in messages[0]
    assert "ruleset: ticket" in messages[1]
    assert all(p.file == str(tmp_path) and p.line is None for p in problems)


def test_duplicate_yaml_key_is_reported(tmp_path: Path) -> None:
    """A key written twice in one mapping is reported instead of silently keeping the last."""
    problem = only(
        problems_for(
            tmp_path,
            {
                "tx.yaml": GOOD_HEAD + "  - name: r\n    when: {field: amount, gt: 1}\n"
                "    decision: x\n    decision: y\n"
            },
        )
    )
    assert problem.line == 9
    assert "appears twice" in problem.message


def test_yaml_tags_that_would_build_objects_are_refused(tmp_path: Path) -> None:
    """Python-object tags are never constructed (safe loading only)."""
    problems = problems_for(
        tmp_path, {"tx.yaml": "ruleset: !!python/object/apply:os.system ['true']\n"}
    )
    assert problems
    assert problems[0].line == 1


def test_load_rulesets_raises_config_error_listing_every_problem(tmp_path: Path) -> None:
    """load_rulesets refuses the files and lists each problem on its own line."""
    write(
        tmp_path,
        "tx.yaml",
        GOOD_HEAD + "  - {name: a, when: {field: amout, gt: 1}, decision: x}\n"
        "  - {name: b, when: {field: chanel, eq: web}, decision: x}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_rulesets(tmp_path, TX_ONLY, SCORE_TYPES)
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[1].startswith(f"{tmp_path / 'tx.yaml'}:6 rule 'a'")
    assert lines[2].startswith(f"{tmp_path / 'tx.yaml'}:7 rule 'b'")


def test_missing_rules_directory_is_one_clear_problem(tmp_path: Path) -> None:
    """A rules directory that does not exist is reported, not crashed on."""
    _, problems = check_rules(tmp_path / "nope", TX_ONLY, SCORE_TYPES)
    assert "does not exist" in only(problems).message
