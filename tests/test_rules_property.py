"""Property tests (hypothesis): random valid rule files always pass ``check_rules`` and
compile; random, damaged events never crash ``RulesEngine.evaluate`` and always get a
decision."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.rules.loader import check_rules
from app.rules.runtime.engine import RulesEngine
from app.settings import Settings
from app.simulator.generate import training_set
from app.wiring import rule_vocabulary
from tests.shipped import SCORE_TYPES

REPO = Path(__file__).resolve().parent.parent
FIELDS, SCORES = rule_vocabulary(Settings())
TYPES = ("transaction", "order", "ticket")
DEFAULTS = {"transaction": "approve", "order": "accept", "ticket": "route_general"}
PLAIN = ("number", "string", "boolean")


def comparable(event_type: str) -> dict[str, str]:
    """Paths a rule may compare, with their kind: plain event fields (list items by
    index 0) and scores."""
    out = {
        path.replace("*", "0"): kind
        for path, kind in FIELDS[event_type].items()
        if kind in PLAIN and not path.endswith("*")
    }
    out.update({f"scores.{name}": kind for name, kind in SCORE_TYPES[event_type].items()})
    return out


PATHS = {t: comparable(t) for t in TYPES}
SCORE_PATH = {t: f"scores.{next(iter(SCORE_TYPES[t]))}" for t in TYPES}
NUMBER_FIELDS = {
    t: sorted(p for p, k in PATHS[t].items() if k == "number" and not p.startswith("scores."))
    for t in TYPES
}

numbers = st.one_of(
    st.integers(-100_000, 100_000),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
words = st.text(alphabet="abcxyzXYZ_- 019", min_size=1, max_size=8)
REGEXES = ("^a", "(?i)password|locked out", "[0-9]+", "x$", "b.c")


def comparison(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """One ``{field: path, <op>: value}`` with a value of the field's kind."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        path = draw(st.sampled_from(sorted(PATHS[event_type])))
        kind = PATHS[event_type][path]
        ops = ["eq", "ne", "exists", "missing"]
        if kind == "number":
            ops += ["gt", "gte", "lt", "lte", "in", "not_in"]
            ops += ["expr"] if NUMBER_FIELDS[event_type] else []
        elif kind == "string":
            ops += ["in", "not_in", "matches", "contains"]
        op = draw(st.sampled_from(ops))
        value: Any
        if op in ("exists", "missing"):
            value = True
        elif op == "matches":
            value = draw(st.sampled_from(REGEXES))
        elif op == "expr":
            other = draw(st.sampled_from(NUMBER_FIELDS[event_type]))
            factor = draw(st.integers(1, 9))
            op = draw(st.sampled_from(["gt", "gte", "lt", "lte", "eq", "ne"]))
            value = {"expr": f"{factor} * {other} + {draw(st.integers(0, 500))}"}
        else:
            one = {"number": numbers, "string": words, "boolean": st.booleans()}[kind]
            value = (
                draw(st.lists(one, min_size=1, max_size=4)) if op in ("in", "not_in") else draw(one)
            )
        return {"field": path, op: value}

    return build()


def condition(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        comparison(event_type),
        lambda inner: st.one_of(
            st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda x: {"not": x}, inner),
        ),
        max_leaves=6,
    )


actions = st.lists(
    st.one_of(
        st.builds(lambda t: {"tag": t}, st.lists(st.sampled_from(["a", "b", "vip"]), min_size=1)),
        st.builds(
            lambda v: {"set": {"queue": v}}, st.one_of(words, st.integers(0, 9), st.booleans())
        ),
        st.just({"publish": "alerts"}),
    ),
    max_size=2,
)


@st.composite
def rule_file(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    """A valid rule file: distinct conditions (stop mode refuses identical ones), distinct
    priorities (so no rule hides behind a broader one at the same priority)."""
    mode = draw(st.sampled_from(["stop", "collect"]))
    conditions = draw(
        st.lists(
            condition(event_type),
            min_size=1,
            max_size=6,
            unique_by=lambda c: json.dumps(c, sort_keys=True),
        )
    )
    priorities = draw(
        st.lists(
            st.integers(-50, 50),
            min_size=len(conditions),
            max_size=len(conditions),
            unique=True,
        )
    )
    rules = []
    for index, (when, priority) in enumerate(zip(conditions, priorities, strict=True)):
        rule: dict[str, Any] = {
            "name": f"r{index}",
            "priority": priority,
            "when": when,
            "reason": f"Rule {index}: {{{SCORE_PATH[event_type]}}}",
        }
        if mode == "stop" or draw(st.booleans()):
            rule["decision"] = draw(st.sampled_from(["approve", "review", "decline"]))
        picked = draw(actions)
        if not picked and "decision" not in rule:
            picked = [{"tag": ["only_tags"]}]  # a collect rule needs a decision or actions
        if picked:
            rule["actions"] = picked
        rules.append(rule)
    return {
        "ruleset": event_type,
        "mode": mode,
        "default": {"decision": DEFAULTS[event_type], "reason": "Nothing matched."},
        "rules": rules,
    }


SAMPLES = {t: [e.model_dump(mode="json") for e in training_set(t, 30, seed=11)[0]] for t in TYPES}
junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


@st.composite
def fact(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    """A simulator event with fields dropped or replaced by junk, and random scores."""
    event = dict(draw(st.sampled_from(SAMPLES[event_type])))
    for key in draw(st.lists(st.sampled_from(sorted(event)), max_size=4)):
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(junk)
    score = st.one_of(st.floats(allow_nan=False), st.text(max_size=6), st.none(), st.booleans())
    scores = draw(st.dictionaries(st.sampled_from(sorted(SCORES[event_type])), score))
    return {**event, "scores": scores, "windows": draw(st.dictionaries(words, numbers))}


def write(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    for event_type in TYPES:
        body = files.get(event_type) or {
            "ruleset": event_type,
            "default": {"decision": DEFAULTS[event_type], "reason": "Nothing matched."},
        }
        (folder / f"{event_type}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


@pytest.mark.parametrize("event_type", TYPES)
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_valid_rule_files_check_compile_and_evaluate(
    event_type: str, data: st.DataObject
) -> None:
    """A generated rule file passes check; its engine decides every damaged event."""
    body = data.draw(rule_file(event_type), label="rule file")
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), {event_type: body})
        rulesets, problems = check_rules(Path(tmp), FIELDS, SCORES)
    assert problems == [], yaml.safe_dump(body)
    engine = RulesEngine(rulesets)
    try:
        facts = data.draw(st.lists(fact(event_type), min_size=1, max_size=5), label="facts")
        results = engine.evaluate(event_type, facts)
    finally:
        engine.close()
    assert len(results) == len(facts)
    decisions = {r["decision"] for r in body["rules"] if "decision" in r} | {DEFAULTS[event_type]}
    for result in results:
        assert result.decision in decisions
        assert set(result.rules_fired) <= {r["name"] for r in body["rules"]}
        if body["mode"] == "stop":
            assert len(result.rules_fired) <= 1


@pytest.fixture(scope="module")
def shipped_engine() -> Any:
    rulesets, problems = check_rules(REPO / "rules", FIELDS, SCORES)
    assert problems == []
    engine = RulesEngine(rulesets)
    yield engine
    engine.close()


@pytest.mark.parametrize("event_type", TYPES)
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_shipped_rules_decide_any_damaged_event(
    shipped_engine: RulesEngine, event_type: str, data: st.DataObject
) -> None:
    """The shipped rules give every damaged event a decision (never an exception)."""
    facts = data.draw(st.lists(fact(event_type), min_size=1, max_size=10), label="facts")
    results = shipped_engine.evaluate(event_type, facts)
    assert len(results) == len(facts)
    assert all(isinstance(r.decision, str) and r.decision for r in results)


@pytest.mark.parametrize("fraud", [5e-06, 1e-05, 1e16, "1E100"])
def test_scores_written_with_an_exponent_are_decided(
    shipped_engine: RulesEngine, fraud: float | str
) -> None:
    """A score JSON writes as 5e-06 or 1e+16 (no fraction part) still gets a decision
    (durable_rules 2.0.28's parser refuses such numbers; found by the property test)."""
    event = SAMPLES["transaction"][0]
    (result,) = shipped_engine.evaluate("transaction", [{**event, "scores": {"fraud": fraud}}])
    assert result.decision in ("approve", "review", "decline")
