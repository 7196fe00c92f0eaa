"""The rule language end to end: YAML → checked RuleSet → durable_rules → RuleResult."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from app.rules.language.spec import RuleSet
from app.rules.loader import load_rulesets
from app.rules.runtime.engine import RulesEngine
from app.rules.runtime.result import RuleResult
from app.simulator.shapes import EVENT_MODELS, field_types
from tests.shipped import SCORE_TYPES

FIELDS = {t: field_types(t) for t in EVENT_MODELS}


def load(tmp_path: Path, body: str, event_type: str = "transaction") -> RuleSet:
    """Load one ruleset from ``body`` (YAML after the 'ruleset' line)."""
    folder = tmp_path / f"rules_{abs(hash(body))}"
    folder.mkdir()
    text = f"ruleset: {event_type}\n" + textwrap.dedent(body)
    (folder / f"{event_type}.yaml").write_text(text, encoding="utf-8")
    return load_rulesets(folder, {event_type: FIELDS[event_type]}, SCORE_TYPES)[event_type]


def run(ruleset: RuleSet, *facts: Mapping[str, Any]) -> list[RuleResult]:
    engine = RulesEngine({ruleset.event_type: ruleset})
    try:
        return engine.evaluate(ruleset.event_type, list(facts))
    finally:
        engine.close()


def decisions(ruleset: RuleSet, *facts: Mapping[str, Any]) -> list[str]:
    return [r.decision for r in run(ruleset, *facts)]


HEAD = "default: {decision: approve, reason: Nothing matched.}\nrules:\n"


def one_rule(tmp_path: Path, when: str, event_type: str = "transaction") -> RuleSet:
    default = "accept" if event_type == "order" else "approve"
    body = (
        f"default: {{decision: {default}, reason: Nothing matched.}}\nrules:\n"
        f"  - {{name: r, when: {when}, decision: hit}}\n"
    )
    return load(tmp_path, body, event_type)


@pytest.mark.parametrize(
    ("when", "facts", "expected"),
    [
        ("{field: channel, eq: pos}", [{"channel": "pos"}, {"channel": "web"}], ["hit", "approve"]),
        ("{field: channel, ne: pos}", [{"channel": "pos"}, {"channel": "web"}], ["approve", "hit"]),
        ("{field: amount, gt: 10}", [{"amount": 11}, {"amount": 10}], ["hit", "approve"]),
        ("{field: amount, gte: 10}", [{"amount": 10}, {"amount": 9}], ["hit", "approve"]),
        ("{field: amount, lt: 10}", [{"amount": 9}, {"amount": 10}], ["hit", "approve"]),
        ("{field: amount, lte: 10}", [{"amount": 10}, {"amount": 11}], ["hit", "approve"]),
        (
            "{field: country, in: [DE, AT]}",
            [{"country": "AT"}, {"country": "FR"}],
            ["hit", "approve"],
        ),
        (
            "{field: country, not_in: [DE, AT]}",
            [{"country": "AT"}, {"country": "FR"}],
            ["approve", "hit"],
        ),
        (
            "{field: device.is_new, exists: true}",
            [{"device": {"is_new": False}}, {}],
            ["hit", "approve"],
        ),
        ("{field: device, exists: true}", [{"device": {"kind": "x"}}, {}], ["hit", "approve"]),
        ("{field: card_country, missing: true}", [{}, {"card_country": "DE"}], ["hit", "approve"]),
        (
            "{field: merchant, matches: '(?i)^casino'}",
            [{"merchant": "Casino Royal"}, {"merchant": "Bakery"}, {}],
            ["hit", "approve", "approve"],
        ),
        (
            "{field: merchant, contains: shop}",
            [{"merchant": "eshop GmbH"}, {"merchant": "Bakery"}],
            ["hit", "approve"],
        ),
        (
            "{field: attributes.flags, contains: vip}",
            [{"attributes": {"flags": ["new", "vip"]}}, {"attributes": {"flags": ["new"]}}],
            ["hit", "approve"],
        ),
    ],
)
def test_every_operator_matches_as_documented(
    tmp_path: Path, when: str, facts: list[dict[str, Any]], expected: list[str]
) -> None:
    """Each operator matches exactly the facts its name says."""
    assert decisions(one_rule(tmp_path, when), *facts) == expected


def test_negated_computed_operators_stay_false_on_missing_fields(tmp_path: Path) -> None:
    """not matches/contains is true for other text, false (unknown) for a missing field."""
    ruleset = one_rule(tmp_path, "{not: {field: merchant, matches: '^Casino'}}")
    assert decisions(ruleset, {"merchant": "Bakery"}, {"merchant": "Casino"}, {}) == [
        "hit",
        "approve",
        "approve",
    ]
    missing = one_rule(tmp_path, "{not: {field: card_country, exists: true}}")
    assert decisions(missing, {}, {"card_country": "DE"}) == ["hit", "approve"]


def test_arithmetic_compares_against_other_fields(tmp_path: Path) -> None:
    """amount > 3 * attributes.avg_amount uses both fields of the same event."""
    ruleset = one_rule(tmp_path, "{field: amount, gt: {expr: '3 * attributes.avg_amount'}}")
    assert decisions(
        ruleset,
        {"amount": "301.00", "attributes": {"avg_amount": 100}},
        {"amount": 300, "attributes": {"avg_amount": "100"}},
    ) == ["hit", "approve"]


def test_arithmetic_with_a_missing_operand_or_zero_division_is_false(tmp_path: Path) -> None:
    """A missing operand or a division by zero makes the comparison (and its not) false."""
    ruleset = one_rule(tmp_path, "{field: amount, gt: {expr: '(attributes.a + 1) / attributes.b'}}")
    negated = one_rule(
        tmp_path, "{not: {field: amount, gt: {expr: '(attributes.a + 1) / attributes.b'}}}"
    )
    facts = [
        {"amount": 10, "attributes": {"a": 3, "b": 2}},  # 10 > 2 → hit
        {"amount": 10, "attributes": {"a": 3}},  # b missing → unknown
        {"amount": 10, "attributes": {"a": 3, "b": 0}},  # zero division → unknown
        {"amount": 10, "attributes": {"a": "x", "b": 2}},  # not a number → unknown
    ]
    assert decisions(ruleset, *facts) == ["hit", "approve", "approve", "approve"]
    assert decisions(negated, *facts) == ["approve"] * 4


def test_priority_orders_rules_and_ties_keep_file_order(tmp_path: Path) -> None:
    """Higher priority fires first in stop mode; equal priorities keep file order."""
    ruleset = load(
        tmp_path,
        HEAD
        + """\
  - {name: low, when: {field: amount, gt: 1}, decision: low}
  - {name: high, priority: 5, when: {field: channel, eq: web}, decision: high}
  - {name: tie_a, priority: 2, when: {field: country, eq: DE}, decision: a}
  - {name: tie_b, priority: 2, when: {field: merchant, eq: m}, decision: b}
""",
    )
    assert [r.name for r in ruleset.rules] == ["high", "tie_a", "tie_b", "low"]
    results = run(
        ruleset,
        {"amount": 5, "channel": "web", "country": "DE"},
        {"amount": 5, "country": "DE", "merchant": "m"},
        {"amount": 5, "merchant": "m"},
        {"amount": 5},
    )
    assert [r.rule for r in results] == ["high", "tie_a", "tie_b", "low"]
    assert all(len(r.rules_fired) == 1 for r in results)


COLLECT = """\
mode: collect
default: {decision: approve, reason: Nothing matched.}
rules:
  - name: tag_online
    when: {field: channel, eq: web}
    actions: [{tag: [online]}, {set: {queue: web, lane: slow}}]
  - name: review_big
    priority: 5
    when: {field: amount, gt: 1000}
    decision: review
    reason: Big {amount}.
    actions: [{publish: fraud-alerts}, {set: {queue: fraud}}, {tag: [big, online]}]
  - name: decline_huge
    priority: 9
    when: {field: amount, gt: 5000}
    decision: decline
    actions: [{webhook: case_mgmt}, {publish: fraud-alerts}]
"""


def test_collect_mode_fires_every_matching_rule_in_priority_order(tmp_path: Path) -> None:
    """collect: all matching rules fire; the highest-priority decision wins."""
    ruleset = load(tmp_path, COLLECT)
    (result,) = run(ruleset, {"amount": 6000, "channel": "web"})
    assert result.rules_fired == ("decline_huge", "review_big", "tag_online")
    assert (result.decision, result.rule) == ("decline", "decline_huge")
    assert result.reasons == (
        "Rule 'decline_huge' matched.",
        "Big 6000.",
        "Rule 'tag_online' matched.",
    )


def test_collect_mode_merges_actions(tmp_path: Path) -> None:
    """publish once, sets merged (higher priority wins per key), tags merged."""
    ruleset = load(tmp_path, COLLECT)
    (result,) = run(ruleset, {"amount": 6000, "channel": "web"})
    assert result.actions == (
        {"type": "webhook", "name": "case_mgmt"},
        {"type": "publish", "topic": "fraud-alerts"},
        {"type": "set", "values": {"queue": "fraud", "lane": "slow"}},
        {"type": "tag", "tags": ["big", "online"]},
    )


def test_collect_mode_action_only_rules_keep_the_default_decision(tmp_path: Path) -> None:
    """When only action-only rules match, the default decides and their actions apply."""
    ruleset = load(tmp_path, COLLECT)
    small, nothing = run(ruleset, {"amount": 5, "channel": "web"}, {"amount": 5})
    assert (small.decision, small.rule, small.rules_fired) == ("approve", None, ("tag_online",))
    assert small.actions == (
        {"type": "tag", "tags": ["online"]},
        {"type": "set", "values": {"queue": "web", "lane": "slow"}},
    )
    assert (nothing.decision, nothing.rules_fired, nothing.reasons) == (
        "approve",
        (),
        ("Nothing matched.",),
    )


def test_stop_mode_fires_only_the_first_rule_and_its_actions(tmp_path: Path) -> None:
    """stop: the same rules without 'mode' fire one rule; only its actions apply."""
    body = COLLECT.replace("mode: collect\n", "").replace(
        "actions: [{tag: [online]}, {set: {queue: web, lane: slow}}]",
        "decision: approve_tagged\n    actions: [{tag: [online]}]",
    )
    ruleset = load(tmp_path, body)
    (result,) = run(ruleset, {"amount": 6000, "channel": "web"})
    assert result.rules_fired == ("decline_huge",)
    assert result.actions == (
        {"type": "webhook", "name": "case_mgmt"},
        {"type": "publish", "topic": "fraud-alerts"},
    )


def test_reason_interpolates_fields_scores_and_format_specs(tmp_path: Path) -> None:
    """Decimals print 2 places (integers none), {x:.3f} its spec, a missing value '?'."""
    ruleset = load(
        tmp_path,
        HEAD
        + """\
  - name: r
    when: {field: amount, gt: 1}
    decision: review
    reason: >-
      Amount {amount} {currency} vs avg {attributes.avg_amount},
      fraud {scores.fraud:.3f}, {{literal}}
""",
    )
    first, second = run(
        ruleset,
        {
            "amount": "2500.5",
            "currency": "EUR",
            "attributes": {"avg_amount": 3},
            "scores": {"fraud": 0.12345},
        },
        {"amount": 7, "scores": {}},
    )
    assert first.reason == "Amount 2500.50 EUR vs avg 3, fraud 0.123, {literal}"
    assert second.reason == "Amount 7 ? vs avg ?, fraud ?, {literal}"


def test_default_reason_is_interpolated_too(tmp_path: Path) -> None:
    """The default's reason may print fields."""
    ruleset = load(tmp_path, "default: {decision: approve, reason: 'Approved {amount}.'}\n")
    assert [r.reason for r in run(ruleset, {"amount": 4}, {})] == ["Approved 4.", "Approved ?."]


def test_decision_table_rows_become_rules_named_after_the_table(tmp_path: Path) -> None:
    """Each row is a rule '<table>.<n>'; '-' matches anything; a bare value means eq."""
    ruleset = load(
        tmp_path,
        """\
default: {decision: approve, reason: ok}
tables:
  - name: band
    priority: 5
    inputs: [amount, channel]
    rows:
      - when: [{gte: 5000}, {in: [online, mobile_app]}]
        decision: review
        reason: Large online payment of {amount}.
      - when: [{gte: 5000}, pos]
        decision: review_pos
      - when: [{gte: 20000}, "-"]
        decision: hold
""",
    )
    assert [r.name for r in ruleset.rules] == ["band.1", "band.2", "band.3"]
    assert all(r.priority == 5 for r in ruleset.rules)
    results = run(
        ruleset,
        {"amount": 6000, "channel": "online"},
        {"amount": 6000, "channel": "pos"},
        {"amount": 30000, "channel": "atm"},
        {"amount": 10, "channel": "online"},
    )
    assert [(r.decision, r.rule) for r in results] == [
        ("review", "band.1"),
        ("review_pos", "band.2"),
        ("hold", "band.3"),
        ("approve", None),
    ]
    assert results[0].reason == "Large online payment of 6000."


def test_windows_are_stored_on_the_ruleset_and_readable_as_fields(tmp_path: Path) -> None:
    """A declared window becomes a numeric field windows.<name> rules can compare."""
    ruleset = load(
        tmp_path,
        """\
default: {decision: approve, reason: ok}
windows:
  - name: big_10m
    within: 10m
    where: {field: amount, gt: 500}
    count: true
rules:
  - name: burst
    when: {field: windows.big_10m, gte: 3}
    decision: review
    reason: "{windows.big_10m} large payments in 10 minutes."
""",
    )
    assert [w.name for w in ruleset.windows] == ["big_10m"]
    hit, miss = run(ruleset, {"windows": {"big_10m": 3}}, {"windows": {"big_10m": 1}})
    assert (hit.decision, hit.reason) == ("review", "3 large payments in 10 minutes.")
    assert miss.decision == "approve"


def test_every_result_carries_the_ruleset_version(tmp_path: Path) -> None:
    """Matches and defaults both record the version that decided them."""
    ruleset = one_rule(tmp_path, "{field: amount, gt: 1}")
    assert {r.ruleset_version for r in run(ruleset, {"amount": 5}, {})} == {ruleset.version}


@pytest.mark.parametrize(
    "change",
    [
        ("decision: hit", "decision: hit\n    priority: 3"),
        ("rules:", "mode: collect\nrules:"),
        ("decision: hit", "decision: hit\n    actions: [{tag: [x]}]"),
        ("decision: hit", "decision: hit\n    reason: other"),
    ],
)
def test_version_changes_with_priority_mode_actions_and_reasons(
    tmp_path: Path, change: tuple[str, str]
) -> None:
    """Every semantic change gives a new version; a comment does not."""
    body = HEAD + "  - name: r\n    when: {field: amount, gt: 1}\n    decision: hit\n"
    base = load(tmp_path, body).version
    assert load(tmp_path, "# note\n" + body).version == base
    assert load(tmp_path, body.replace(*change)).version != base


def test_numbers_json_writes_with_an_exponent_compare_exactly(tmp_path: Path) -> None:
    """Tiny/huge operands and values (5e-06, 1e+16) work although durable cannot parse them."""
    tiny = one_rule(tmp_path, "{field: amount, gt: 0.000001}")
    assert decisions(tiny, {"amount": 5e-06}, {"amount": 1e-07}, {"amount": 1e20}) == [
        "hit",
        "approve",
        "hit",
    ]
    zero = one_rule(tmp_path, "{field: amount, gt: 0}")
    assert decisions(zero, {"amount": 5e-06}, {"amount": -1e-09}, {"amount": "1E100"}) == [
        "hit",
        "approve",
        "hit",
    ]
    huge = one_rule(tmp_path, "{field: amount, lt: 100000000000000000}")
    assert decisions(huge, {"amount": 1e16}, {"amount": 1e18}) == ["hit", "approve"]
