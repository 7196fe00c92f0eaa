"""Rule values → durable_rules JSON definitions, and events → flat facts (pure functions)."""

from __future__ import annotations

from app.rules.language.spec import AllOf, AnyOf, Compare, Not, Rule, RuleSet, SourceRef
from app.rules.runtime.compile import key_kinds, to_durable, to_expression
from app.rules.runtime.facts import flatten_facts, prepare_fact


def ruleset(*rules: Rule) -> RuleSet:
    return RuleSet("transaction", rules, "approve", "default", "v1", ("t.yaml",))


def rule(name: str, when: AllOf | AnyOf | Compare | Not) -> Rule:
    return Rule(name, when, "review", f"{name} matched", SourceRef("t.yaml", 1))


def test_comparison_operators_map_to_durable_operators() -> None:
    """eq/ne/gt/gte/lt/lte become $eq/$neq/$gt/$gte/$lt/$lte on the flat key."""
    assert to_expression(Compare("amount", "gt", 1000)) == {"$gt": {"amount": 1000}}
    assert to_expression(Compare("device.is_new", "eq", True)) == {"$eq": {"device__is_new": True}}
    assert to_expression(Compare("scores.fraud", "lte", 0.5)) == {"$lte": {"scores__fraud": 0.5}}
    assert to_expression(Compare("channel", "ne", "pos")) == {"$neq": {"channel": "pos"}}


def test_in_and_not_in_expand_to_or_and_and() -> None:
    """in → $or of $eq; not_in → $and of $neq; a one-item list needs no wrapper."""
    assert to_expression(Compare("channel", "in", ("online", "mobile_app"))) == {
        "$or": [{"$eq": {"channel": "online"}}, {"$eq": {"channel": "mobile_app"}}]
    }
    assert to_expression(Compare("channel", "not_in", ("a", "b"))) == {
        "$and": [{"$neq": {"channel": "a"}}, {"$neq": {"channel": "b"}}]
    }
    assert to_expression(Compare("channel", "in", ("a",))) == {"$eq": {"channel": "a"}}


def test_all_and_any_nest_and_list_indexes_flatten() -> None:
    """all/any become $and/$or; items.0.sku becomes items__0__sku."""
    condition = AllOf(
        (
            Compare("amount", "gt", 2000),
            AnyOf((Compare("items.0.sku", "eq", "X"), Compare("scores.fraud", "gte", 0.9))),
        )
    )
    assert to_expression(condition) == {
        "$and": [
            {"$gt": {"amount": 2000}},
            {"$or": [{"$eq": {"items__0__sku": "X"}}, {"$gte": {"scores__fraud": 0.9}}]},
        ]
    }


def test_not_is_pushed_down_with_de_morgan() -> None:
    """not(all(a > 1, b in [x])) → any(a <= 1, b not in [x]); no $nex is ever emitted."""
    condition = Not(AllOf((Compare("a", "gt", 1), Compare("b", "in", ("x",)))))
    assert to_expression(condition) == {"$or": [{"$lte": {"a": 1}}, {"$neq": {"b": "x"}}]}
    assert to_expression(Not(Not(Compare("a", "lt", 1)))) == {"$lt": {"a": 1}}


def test_to_durable_orders_rules_by_priority_and_names_actions_after_rules() -> None:
    """Each rule gets pri = its position and an action named after it."""
    definition = to_durable(
        ruleset(
            rule("first", Compare("amount", "gt", 5)), rule("second", Compare("amount", "gt", 1))
        ),
        "transaction_v1_1",
    )
    assert definition == {
        "transaction_v1_1": {
            "first": {"all": [{"m": {"$gt": {"amount": 5}}}], "pri": 0, "run": "first"},
            "second": {"all": [{"m": {"$gt": {"amount": 1}}}], "pri": 1, "run": "second"},
        }
    }


def test_flatten_facts_flattens_nesting_lists_and_scores_and_drops_nulls() -> None:
    """Nested objects and lists become __-joined keys; null values are left out."""
    event = {
        "amount": 12.5,
        "device": {"is_new": True, "kind": None},
        "items": [{"sku": "A", "quantity": 2}],
        "attributes": {},
        "scores": {"ignored": 1},
    }
    assert flatten_facts(event, {"fraud": 0.25}) == {
        "amount": 12.5,
        "device__is_new": True,
        "items__0__sku": "A",
        "items__0__quantity": 2,
        "scores__fraud": 0.25,
    }


def test_prepare_fact_keeps_only_read_keys_of_the_compared_kind() -> None:
    """Decimal strings become numbers; wrong-kind values count as missing."""
    rs = ruleset(
        rule(
            "r",
            AllOf(
                (
                    Compare("amount", "gt", 1),
                    Compare("channel", "eq", "web"),
                    Compare("device.is_new", "eq", True),
                )
            ),
        )
    )
    kinds = key_kinds(rs)
    assert kinds == {"amount": "number", "channel": "string", "device__is_new": "boolean"}
    flat = {"amount": "2500.00", "channel": 5, "device__is_new": 1, "body": "long text"}
    assert prepare_fact(flat, kinds) == {"amount": 2500.0}
    assert prepare_fact({"amount": "abc"}, kinds) == {}
    assert prepare_fact({"amount": True}, kinds) == {}
