"""RulesEngine against the real durable_rules: first match, default, operators, reloads."""

from __future__ import annotations

import operator
import random
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from app.errors import ConfigError
from app.rules.language.expr import Expression, evaluate
from app.rules.language.spec import AllOf, AnyOf, Compare, Condition, Not, RuleSet
from app.rules.loader import load_rulesets
from app.rules.runtime.engine import RulesEngine
from app.rules.runtime.result import RuleResult
from app.simulator.shapes import EVENT_MODELS, field_types
from tests.shipped import SCORE_TYPES

REPO_RULES = Path(__file__).resolve().parent.parent / "rules"

FIELDS = {t: field_types(t) for t in EVENT_MODELS}
SCORES = SCORE_TYPES


def transaction_rules(tmp_path: Path, rules: str, name: str = "transaction.yaml") -> RuleSet:
    """Load a transaction ruleset whose rules are ``rules`` (YAML list items)."""
    folder = tmp_path / name.removesuffix(".yaml")
    folder.mkdir(exist_ok=True)
    text = "ruleset: transaction\ndefault: {decision: approve, reason: Nothing matched.}\n"
    if rules:
        text += "rules:\n" + textwrap.dedent(rules)
    (folder / name).write_text(text, encoding="utf-8")
    return load_rulesets(folder, {"transaction": FIELDS["transaction"]}, SCORES)["transaction"]


def decide(engine: RulesEngine, *facts: Mapping[str, Any]) -> list[str]:
    return [r.decision for r in engine.evaluate("transaction", list(facts))]


@pytest.fixture
def engine(tmp_path: Path) -> RulesEngine:
    ruleset = transaction_rules(
        tmp_path,
        """\
        - name: decline_fraud
          when: {field: scores.fraud, gte: 0.9}
          decision: decline
          reason: Fraud.
        - name: review_large_new_or_online
          when:
            all:
              - {field: amount, gt: 2000}
              - any:
                  - {field: device.is_new, eq: true}
                  - {field: channel, in: [online, mobile_app]}
          decision: review
          reason: Large.
        - name: review_not_domestic
          when:
            not: {field: country, in: [DE, AT]}
          decision: review_foreign
          reason: Foreign.
        - name: hold_unusual_category
          when: {field: merchant_category, not_in: [grocery, fuel]}
          decision: hold
          reason: Unusual category.
        """,
    )
    return RulesEngine({"transaction": ruleset})


def fact(**fields: Any) -> dict[str, Any]:
    scores = fields.pop("scores", {"fraud": 0.1})
    base: dict[str, Any] = {"country": "DE", "merchant_category": "grocery", "amount": 10}
    return {**base, **fields, "scores": scores}


def test_first_matching_rule_in_file_order_wins(engine: RulesEngine) -> None:
    """When several rules match, the earliest one decides."""
    both = fact(amount=5000, channel="online", scores={"fraud": 0.95})
    version = engine.rulesets["transaction"].version
    assert engine.evaluate("transaction", [both]) == [
        RuleResult(
            "decline",
            "decline_fraud",
            "Fraud.",
            rules_fired=("decline_fraud",),
            reasons=("Fraud.",),
            ruleset_version=version,
        )
    ]


def test_default_applies_when_no_rule_matches(engine: RulesEngine) -> None:
    """No matching rule → the ruleset's default, with rule None."""
    version = engine.rulesets["transaction"].version
    assert engine.evaluate("transaction", [fact()]) == [
        RuleResult(
            "approve",
            None,
            "Nothing matched.",
            reasons=("Nothing matched.",),
            ruleset_version=version,
        )
    ]


def test_all_any_and_nested_paths(engine: RulesEngine) -> None:
    """all needs every part, any needs one; device.is_new reads the nested field."""
    assert decide(
        engine,
        fact(amount=5000, device={"is_new": True}),
        fact(amount=5000, channel="mobile_app"),
        fact(amount=5000, channel="pos", device={"is_new": False}),
        fact(amount=100, channel="online"),
    ) == ["review", "review", "approve", "approve"]


def test_not_in_and_negated_in(engine: RulesEngine) -> None:
    """not: {in} and not_in match values outside the list only."""
    assert decide(
        engine,
        fact(country="FR"),
        fact(country="AT"),
        fact(merchant_category="jewelry"),
        fact(merchant_category="fuel"),
    ) == ["review_foreign", "approve", "hold", "approve"]


def test_missing_fields_never_match_even_negated(engine: RulesEngine) -> None:
    """A missing or null field satisfies no comparison: not, not_in and ne stay unmatched."""
    event = {"amount": 10, "country": None, "scores": {"fraud": 0.1}}
    assert decide(engine, event) == ["approve"]


def test_numeric_strings_compare_as_numbers(engine: RulesEngine) -> None:
    """JSON-dumped decimals ("5000.00") compare numerically, not as text."""
    assert decide(
        engine,
        fact(amount="5000.00", channel="online"),
        fact(amount="900.00", channel="online"),
        fact(amount="10000", channel="online"),
    ) == ["review", "approve", "review"]


def test_list_indexes_and_attributes_are_readable(tmp_path: Path) -> None:
    """items.0.sku reads the first item; attributes.* keys are usable."""
    folder = tmp_path / "order"
    folder.mkdir()
    (folder / "order.yaml").write_text(
        textwrap.dedent(
            """\
            ruleset: order
            default: {decision: accept, reason: ok}
            rules:
              - {name: sku, when: {field: items.0.sku, eq: GIFT}, decision: hold}
              - {name: vip, when: {field: attributes.vip, eq: true}, decision: fast}
            """
        ),
        encoding="utf-8",
    )
    rulesets = load_rulesets(folder, {"order": FIELDS["order"]}, SCORES)
    engine = RulesEngine(rulesets)
    results = engine.evaluate(
        "order",
        [
            {"items": [{"sku": "GIFT"}], "scores": {"risk": 0.1}},
            {"items": [{"sku": "X"}, {"sku": "GIFT"}], "attributes": {"vip": True}, "scores": {}},
            {"items": [], "attributes": {"vip": "yes"}, "scores": {}},
        ],
    )
    assert [r.decision for r in results] == ["hold", "fast", "accept"]


def test_redelivered_identical_fact_is_evaluated_again(engine: RulesEngine) -> None:
    """The same fact posted twice (in one batch and in a later batch) is decided each time."""
    same = fact(amount=5000, channel="online", event_id="e-1")
    assert decide(engine, same, same) == ["review", "review"]
    assert decide(engine, same) == ["review"]


def test_two_thousand_evaluations_keep_working(engine: RulesEngine) -> None:
    """Matches and misses over 2,000 posts leave no state behind that changes results."""
    facts = [fact(amount=5000, channel="online") if i % 2 else fact(amount=i) for i in range(2000)]
    for _ in range(2):
        results = engine.evaluate("transaction", facts)
        assert [r.decision for r in results] == ["approve", "review"] * 1000


def test_replace_with_a_new_version_changes_results(tmp_path: Path, engine: RulesEngine) -> None:
    """replace() puts new rules in service; the same version can be registered again."""
    big = fact(amount=5000, channel="online")
    assert decide(engine, big) == ["review"]
    stricter = transaction_rules(
        tmp_path,
        "- {name: decline_big, when: {field: amount, gt: 1000}, decision: decline}\n",
        name="stricter.yaml",
    )
    engine.replace({"transaction": stricter})
    assert decide(engine, big) == ["decline"]
    assert engine.rulesets["transaction"].version == stricter.version
    engine.replace({"transaction": stricter})
    assert decide(engine, big, fact()) == ["decline", "approve"]


def test_unknown_event_type_is_a_config_error(engine: RulesEngine) -> None:
    """Evaluating a type without rules says which types are loaded."""
    with pytest.raises(ConfigError, match="no rules loaded for event type 'order'"):
        engine.evaluate("order", [{}])


def test_ruleset_without_rules_returns_the_default(tmp_path: Path) -> None:
    """A ruleset with only a default decides every fact with it."""
    ruleset = transaction_rules(tmp_path, "")
    engine = RulesEngine({"transaction": ruleset})
    assert decide(engine, fact(), fact()) == ["approve", "approve"]


def test_shipped_rules_decide_realistic_events() -> None:
    """The rule files in rules/ give the decisions their comments promise."""
    engine = RulesEngine(load_rulesets(REPO_RULES, FIELDS, SCORES))
    tx = engine.evaluate(
        "transaction",
        [
            {"amount": "50.00", "channel": "pos", "scores": {"fraud": 0.02}},
            {"amount": "3000.00", "channel": "online", "scores": {"fraud": 0.2}},
            {"amount": "30.00", "channel": "pos", "scores": {"fraud": 0.97}},
        ],
    )
    assert [r.decision for r in tx] == ["approve", "review", "decline"]
    ticket = engine.evaluate(
        "ticket",
        [
            {"customer_tier": "enterprise", "scores": {"urgency": "high", "category": "billing"}},
            {"scores": {"category": "billing", "category_confidence": 0.8, "urgency": "low"}},
            {"scores": {"category": "billing", "category_confidence": 0.3, "urgency": "low"}},
        ],
    )
    assert [r.decision for r in ticket] == ["escalate", "route_billing", "route_general"]
    order = engine.evaluate(
        "order", [{"first_order": True, "total": "2000.00", "items": [], "scores": {"risk": 0.1}}]
    )
    assert [r.decision for r in order] == ["review"]


def test_shipped_rules_show_collect_mode_tables_and_regex() -> None:
    """ticket collects tags and fields; order's table bands totals; regex reads subjects."""
    engine = RulesEngine(load_rulesets(REPO_RULES, FIELDS, SCORES))
    (locked,) = engine.evaluate(
        "ticket",
        [
            {
                "subject": "Locked out after PASSWORD reset",
                "customer_tier": "enterprise",
                "scores": {"urgency": "high", "category": "account", "category_confidence": 0.9},
            }
        ],
    )
    assert locked.decision == "escalate"
    assert locked.rules_fired == (
        "escalate_urgent_premium",
        "flag_account_lockout",
        "route_account",
        "tag_urgent",
    )
    assert locked.actions == (
        {"type": "set", "values": {"priority": "p1", "queue": "account"}},
        {"type": "tag", "tags": ["vip", "account_access", "urgent"]},
    )
    assert locked.reasons[-2] == "Looks like an account or login question (90% sure)."
    orders = engine.evaluate(
        "order",
        [
            {"total": "6000.00", "payment_method": "crypto", "currency": "EUR", "scores": {}},
            {"total": "6000.00", "payment_method": "card", "scores": {"risk": 0.1}},
        ],
    )
    assert [(r.decision, r.rule) for r in orders] == [
        ("hold", "total_band_by_payment.1"),
        ("review", "total_band_by_payment.2"),
    ]
    assert orders[0].reason == "A 6000.00 EUR order paid by crypto."
    (young,) = engine.evaluate(
        "transaction",
        [
            {
                "amount": "900.00",
                "channel": "pos",
                "attributes": {"account_age_days": 2},
                "scores": {"fraud": 0.1},
            }
        ],
    )
    assert (young.decision, young.rule) == ("review", "review_amount_large_for_account_age")


# A plain-Python reading of the rule language, to check durable against.
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}


def _reference(  # noqa: PLR0911 - mirrors the language case by case
    condition: Condition, flat: Mapping[str, Any]
) -> bool | None:
    """Three-valued: None when a comparison reads a missing field."""
    if isinstance(condition, Compare):
        key = condition.path.replace(".", "__")
        if condition.op == "exists":
            return key in flat
        if key not in flat:
            return None
        value = condition.value
        if isinstance(value, Expression):
            operands = {p: flat.get(p.replace(".", "__")) for p in value.paths}
            if None in operands.values():
                return None
            value = evaluate(value.tree, operands.__getitem__)
            if value is None:
                return None
        return _OPS[condition.op](flat[key], value)
    if isinstance(condition, Not):
        inner = _reference(condition.condition, flat)
        return None if inner is None else not inner
    values = [_reference(c, flat) for c in condition.conditions]
    if isinstance(condition, AllOf):
        return False if False in values else (None if None in values else True)
    assert isinstance(condition, AnyOf)
    return True if True in values else (None if None in values else False)


def test_durable_agrees_with_a_plain_reading_of_the_shipped_rules() -> None:
    """On 3,000 random transactions durable picks the same rule as a direct evaluation."""
    ruleset = load_rulesets(REPO_RULES, FIELDS, SCORES)["transaction"]
    engine = RulesEngine({"transaction": ruleset})
    rng = random.Random(7)
    facts = []
    for _ in range(3000):
        event: dict[str, Any] = {
            "amount": rng.choice([5, 900, 1500, 2500, 12000]),
            "channel": rng.choice(["pos", "online", "mobile_app"]),
            "merchant_category": rng.choice(["grocery", "gambling", "crypto"]),
            "scores": {"fraud": rng.choice([0.01, 0.3, 0.45, 0.65, 0.75, 0.95])},
        }
        if rng.random() < 0.8:
            event["device"] = {"is_new": rng.random() < 0.5}
        facts.append(event)
    results = engine.evaluate("transaction", facts)
    for event, result in zip(facts, results, strict=True):
        flat = {
            "amount": event["amount"],
            "channel": event["channel"],
            "merchant_category": event["merchant_category"],
            "scores__fraud": event["scores"]["fraud"],
            **({"device__is_new": event["device"]["is_new"]} if "device" in event else {}),
        }
        expected = next((r.name for r in ruleset.rules if _reference(r.when, flat)), None)
        assert result.rule == expected, (event, result)
