"""Event types declared in files: reading, checking, compiling and decoding (app.declarations)."""

from __future__ import annotations

import json
import os
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from app.declarations import load_declarations
from app.declarations.build import TEXT_MARK
from app.rules.loader import check_rules
from app.simulator.generate import generate
from app.simulator.shapes import EVENT_MODELS, field_types
from tests.harness import arbiter
from tests.shipped import SCORE_TYPES

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "schemas"

LOAN = """\
type: loan
description: A credit application.
id: application_id
key: customer_id
time: submitted_at
fields:
  application_id: string
  customer_id: {type: string, max_length: 32}
  submitted_at: datetime
  balance: {type: number, min: 0, max: 100000}
  income: {type: number, min: 0}
  student: boolean
  purpose: {type: enum, values: [car, home, education]}
  note: {type: string, text: true, max_length: 200, required: false}
  dependants: {type: integer, min: 0, max: 20, required: false}
  address:
    type: object
    fields:
      country: {type: string, format: country}
      postcode: {type: string, pattern: '^[0-9A-Z -]{3,10}$'}
  tags: {type: array, items: string, max_length: 3, required: false}
labels:
  defaulted: boolean
models:
  - name: default_risk
    predicts: {label: defaulted}
    features: {exclude: [customer_id], derived: [{log: income}]}
"""

GOOD_LOAN = {
    "application_id": "app-1",
    "customer_id": "c-7",
    "submitted_at": "2026-03-01T09:30:00+01:00",
    "balance": 1200.5,
    "income": 38000,
    "student": False,
    "purpose": "car",
    "address": {"country": "DE", "postcode": "10115"},
}


def declare(tmp_path: Path, text: str, name: str = "loan.yaml") -> Path:
    folder = tmp_path / "schemas"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def shipped():
    declarations, problems = load_declarations(SHIPPED)
    assert problems == []
    return declarations


@pytest.fixture
def loan(tmp_path: Path):
    declarations, problems = load_declarations(declare(tmp_path, LOAN))
    assert problems == []
    return declarations["loan"].model


# -- the shipped types, declared


def test_the_shipped_declarations_decode_the_simulator_stream_exactly_as_the_hand_written_models(
    shipped,
) -> None:
    accepted = refused = 0
    for sim in generate(3000, seed=5, malformed_rate=0.3):
        hand = EVENT_MODELS[sim.event_type]
        declared = shipped[sim.event_type].model
        hand_errors = _errors(hand, sim.value)
        if hand_errors is not None:
            assert _errors(declared, sim.value) == hand_errors
            refused += 1
            continue
        expected = hand.model_validate_json(sim.value)
        got = declared.model_validate_json(sim.value)
        assert got.model_dump(mode="json") == expected.model_dump(mode="json")
        assert got.partition_key == expected.partition_key
        assert got.event_id == expected.event_id
        accepted += 1
    assert accepted > 1500
    assert refused > 300


def test_the_shipped_declarations_give_the_rules_the_same_fields_and_scores(shipped) -> None:
    for event_type in EVENT_MODELS:
        assert shipped[event_type].field_kinds() == field_types(event_type)
        assert shipped[event_type].score_kinds() == SCORE_TYPES[event_type]


def test_the_shipped_rules_check_clean_against_the_declarations(shipped) -> None:
    rulesets, problems = check_rules(REPO / "rules", shipped.field_kinds(), shipped.score_kinds())
    assert problems == []
    assert sorted(rulesets) == ["order", "ticket", "transaction"]


def _errors(model, raw: bytes) -> set[tuple[object, ...]] | None:
    """The errors (where, what) decoding ``raw`` gives, or None when it decodes."""
    try:
        model.model_validate_json(raw)
    except ValidationError as exc:
        return {(tuple(e["loc"]), e["msg"]) for e in exc.errors()}
    return None


# -- a type nobody shipped


def test_a_declared_type_decodes_under_its_own_id_key_and_time_names(loan) -> None:
    event = loan.model_validate_json(json.dumps(GOOD_LOAN))
    assert event.event_id == "app-1"
    assert event.partition_key == "c-7"
    assert event.occurred_at == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert event.event_type == "loan"
    dumped = event.model_dump(mode="json", exclude_none=True)
    assert dumped["application_id"] == "app-1"
    assert dumped["submitted_at"] == "2026-03-01T09:30:00+01:00"
    assert "event_id" not in dumped
    assert "occurred_at" not in dumped
    assert loan.model_validate(dumped) == event  # a dump reads back as the same event


def test_each_bad_value_is_refused_naming_the_field_and_the_fix(loan) -> None:
    bad = {
        **GOOD_LOAN,
        "application_id": "app 1",
        "submitted_at": "2026-03-01T09:30:00",
        "balance": -1,
        "student": "perhaps",
        "purpose": "boat",
        "customer_id": "c" * 40,
        "address": {"country": "de", "postcode": "1"},
        "tags": ["a", "b", "c", "d"],
        "note": "n" * 201,
        "surprise": 1,
    }
    with pytest.raises(ValidationError) as caught:
        loan.model_validate_json(json.dumps(bad))
    errors = {e["loc"]: e["msg"] for e in caught.value.errors()}
    assert "pattern" in errors[("application_id",)]
    assert errors[("submitted_at",)].startswith("submitted_at has no timezone")
    assert "greater than or equal to 0" in errors[("balance",)]
    assert "valid boolean" in errors[("student",)]
    assert "'car', 'home' or 'education'" in errors[("purpose",)]
    assert errors[("customer_id",)] == "String should have at most 32 characters"
    assert errors[("address", "country")] == "country code 'de' must be upper case: send 'DE'"
    assert "pattern" in errors[("address", "postcode")]
    assert "at most 3 items" in errors[("tags",)]
    assert errors[("note",)] == (
        "note is 201 characters; the limit is 200: shorten it, or send long content as a link"
    )
    assert errors[("surprise",)] == "Extra inputs are not permitted"


def test_a_missing_required_field_is_refused_and_an_optional_one_is_not(loan) -> None:
    without_note = loan.model_validate(GOOD_LOAN)
    assert without_note.note is None
    with pytest.raises(ValidationError) as caught:
        loan.model_validate({k: v for k, v in GOOD_LOAN.items() if k != "income"})
    assert [e["loc"] for e in caught.value.errors()] == [("income",)]


def test_a_type_without_an_event_time_takes_the_arrival_time(tmp_path: Path) -> None:
    text = """\
        type: shipment
        id: shipment_id
        key: carrier
        unknown_fields: keep
        fields:
          shipment_id: string
          carrier: integer
          weight_kg: {type: number, min: 0}
        """
    declarations, problems = load_declarations(declare(tmp_path, text, "shipment.yaml"))
    assert problems == []
    model = declarations["shipment"].model
    before = datetime.now(UTC)
    event = model.model_validate({"shipment_id": "s1", "carrier": 7, "weight_kg": 2, "extra": "x"})
    assert before <= event.occurred_at <= datetime.now(UTC)
    assert event.partition_key == "7"
    assert event.model_dump()["extra"] == "x"  # unknown_fields: keep
    assert declarations["shipment"].spec.time_field is None


def test_the_json_schema_of_a_declared_type_accepts_good_events_and_refuses_bad_ones(
    tmp_path: Path,
) -> None:
    declarations, _ = load_declarations(declare(tmp_path, LOAN))
    schema = declarations["loan"].json_schema()
    jsonschema.validate(GOOD_LOAN, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD_LOAN, "purpose": "boat"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD_LOAN, "surprise": 1}, schema)
    assert schema["properties"]["note"][TEXT_MARK] is True
    assert set(schema["required"]) >= {"application_id", "submitted_at", "customer_id"}


def test_declared_models_give_rules_their_scores(tmp_path: Path) -> None:
    declarations, _ = load_declarations(declare(tmp_path, LOAN))
    assert declarations.score_kinds() == {"loan": {"default_risk": "number"}}
    kinds = declarations.field_kinds()["loan"]
    assert kinds["application_id"] == "string"
    assert kinds["submitted_at"] == "datetime"
    assert kinds["address.country"] == "string"
    assert kinds["tags.*"] == "string"


# -- problems: file, line and the fix

BROKEN = [
    (
        "unknown field type",
        LOAN.replace("  student: boolean", "  student: bolean"),
        12,
        "field 'student' has unknown type the string 'bolean' — did you mean 'boolean'?",
    ),
    (
        "key field that does not exist",
        LOAN.replace("key: customer_id", "key: client_id"),
        4,
        "key: the string 'client_id' is not a field of this type",
    ),
    (
        "model whose label is never produced",
        LOAN.replace("predicts: {label: defaulted}", "predicts: {label: default}"),
        26,
        "model 'default_risk' predicts label the string 'default', which no outcome of 'loan' "
        "carries — did you mean 'defaulted'?",
    ),
    (
        "time field that is not a datetime",
        LOAN.replace("time: submitted_at", "time: balance"),
        10,
        "the time field 'balance' must be a required datetime",
    ),
    (
        "invalid pattern",
        LOAN.replace("'^[0-9A-Z -]{3,10}$'", "'^[0-9'"),
        20,
        "pattern '^[0-9' is not a valid regular expression",
    ),
    (
        "unknown derived feature",
        LOAN.replace("{log: income}", "{logg: income}"),
        27,
        "unknown derived feature 'logg' — did you mean 'log'?",
    ),
    (
        "text model without text",
        LOAN.replace("  note: {type: string, text: true,", "  note: {type: string,").replace(
            "    predicts: {label: defaulted}", "    predicts: {label: defaulted}\n    kind: text"
        ),
        25,
        "text model 'default_risk' has no text to read — mark a string field 'text: true'",
    ),
    (
        "field declared twice",
        LOAN.replace("  student: boolean", "  student: boolean\n  income: number"),
        13,
        "field 'income' is declared twice",
    ),
    (
        "option that does not apply to the type",
        LOAN.replace("  student: boolean", "  student: {type: boolean, max: 3}"),
        12,
        "'max' does not apply to a boolean field ('student') — remove it",
    ),
]


@pytest.mark.parametrize(("what", "text", "line", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_declaration_is_refused_with_its_file_line_and_fix(
    tmp_path: Path, what: str, text: str, line: int, message: str
) -> None:
    declarations, problems = load_declarations(declare(tmp_path, text))
    assert "loan" not in declarations, what
    shown = [str(p) for p in problems]
    where = f"{tmp_path / 'schemas' / 'loan.yaml'}:{line}: "
    assert any(s.startswith(where) and message in s for s in shown), shown


def test_a_rule_that_reads_a_field_the_type_lacks_is_refused_with_file_and_line(
    tmp_path: Path,
) -> None:
    declarations, _ = load_declarations(declare(tmp_path, LOAN))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "loan.yaml").write_text(
        textwrap.dedent(
            """\
            ruleset: loan
            default: {decision: approve, reason: fine}
            rules:
              - name: risky
                when: {all: [{field: scores.default_risk, gte: 0.5}, {field: salary, lt: 1000}]}
                decision: decline
                reason: "risk {scores.default_risk:.2f}"
            """
        ),
        encoding="utf-8",
    )
    _, problems = check_rules(rules, declarations.field_kinds(), declarations.score_kinds())
    shown = [str(p) for p in problems]
    assert len(shown) == 1, shown
    assert shown[0].startswith(f"{rules / 'loan.yaml'}:5 rule 'risky': ")
    assert "salary" in shown[0]


def test_a_declaration_is_named_after_its_type(tmp_path: Path) -> None:
    folder = declare(tmp_path, LOAN)
    (folder / "loan2.yaml").write_text(LOAN, encoding="utf-8")
    declarations, problems = load_declarations(folder)
    assert list(declarations) == ["loan"]
    assert str(problems[0]) == (
        f"{folder / 'loan2.yaml'}:1: the file declares type 'loan' but is named loan2.yaml — "
        "name it loan.yaml (one file per type, named after it)"
    )


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    (tmp_path / "data").mkdir(exist_ok=True)
    return {**base, "ARBITER_DATA_DIR": str(tmp_path / "data"), **settings}


def test_schemas_check_prints_each_problem_and_exits_1_or_summarises_the_types(
    tmp_path: Path,
) -> None:
    # The CLI runs in a process of its own: it configures logging for its own streams.
    good = declare(tmp_path, LOAN)
    env = cli_env(tmp_path, ARBITER_SCHEMAS_DIR=str(good), ARBITER_RULES_DIR=str(tmp_path / "no"))
    result = arbiter("schemas", "check", env=env, cwd=tmp_path / "data", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loan: 11 fields, key customer_id, time submitted_at" in result.stdout
    assert "default_risk (tabular, predicts defaulted)" in result.stdout
    (good / "loan.yaml").write_text(LOAN.replace("key: customer_id", "key: client"), "utf-8")
    result = arbiter("schemas", "check", env=env, cwd=tmp_path / "data", timeout=120)
    assert result.returncode == 1
    assert "loan.yaml:4: key: the string 'client' is not a field of this type" in result.stderr


def test_schemas_export_writes_the_json_schema_of_a_declared_type(tmp_path: Path) -> None:
    env = cli_env(tmp_path, ARBITER_SCHEMAS_DIR=str(declare(tmp_path, LOAN)))
    out = tmp_path / "out"
    result = arbiter("schemas", "export", str(out), env=env, cwd=tmp_path / "data", timeout=120)
    assert result.returncode == 0, result.stderr
    schema = json.loads((out / "loan.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(GOOD_LOAN, schema)
    assert (out / "outcome.schema.json").is_file()
    assert not (out / "transaction.schema.json").exists()  # only the declared types


def test_outcome_labels_are_checked_against_the_declared_labels(shipped) -> None:
    from app.declarations.labels import label_problems

    order = shipped["order"].spec.labels
    assert label_problems("order", order, {"status": "Returned", "problem": 1}) == []
    assert label_problems("order", order, {"status": "lost"}) == [
        "label 'status' is 'lost'; send one of fulfilled, chargeback, returned, cancelled"
    ]
    assert label_problems("order", order, {"staus": "returned"}) == [
        "label 'staus' is not declared for order (declared: status, problem): add it under "
        "'labels:' in the type's declaration, or leave it out"
    ]
    fraud = shipped["transaction"].spec.labels
    assert label_problems("transaction", fraud, {"fraud": "TRUE"}) == []
    assert label_problems("transaction", fraud, {"fraud": 2}) == [
        "label 'fraud' is 2; send true or false"
    ]


LOAN_RULES_WITH_TESTS = """\
ruleset: loan
default: {decision: approve, reason: fine}
rules:
  - name: decline_risky
    when: {field: scores.default_risk, gte: 0.5}
    decision: decline
    reason: "risk {scores.default_risk:.2f}"
  - name: review_students
    when: {field: student, eq: true}
    decision: review
    reason: a student
tests:
  - name: a risky application is declined
    scores: {default_risk: 0.9}
    expect: {decision: decline, rules_fired: [decline_risky]}
  - name: a student is reviewed
    event: {student: true}
    expect: {decision: review}
  - name: nothing against it
    expect: {decision: approve}
"""


def test_rule_tests_of_a_declared_type_start_from_its_example(tmp_path: Path) -> None:
    from app.declarations import served_types
    from app.rules.authoring.testing import run_rule_tests

    example = "\nexample:\n" + textwrap.indent(json.dumps(GOOD_LOAN), "  ") + "\n"
    folder = declare(tmp_path, LOAN + example)
    types = served_types(folder, ["loan"])
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "loan.yaml").write_text(LOAN_RULES_WITH_TESTS, encoding="utf-8")
    report = run_rule_tests(rules, types.field_kinds(), types.score_kinds(), types)
    assert report.problems == ()
    assert [c.test.name for c in report.results if c.passed] == [
        "a risky application is declined",
        "a student is reviewed",
        "nothing against it",
    ]


def test_an_example_that_is_not_a_valid_event_is_refused_with_its_line(tmp_path: Path) -> None:
    bad = {**GOOD_LOAN, "purpose": "boat"}
    example = "example:\n" + textwrap.indent(json.dumps(bad), "  ") + "\n"
    folder = declare(tmp_path, LOAN + example)
    declarations, problems = load_declarations(folder)
    assert "loan" not in declarations
    assert str(problems[0]).startswith(f"{folder / 'loan.yaml'}:28: the example is not a valid")
    assert "purpose: Input should be 'car', 'home' or 'education'" in str(problems[0])


def test_the_attributes_caps_are_settings_and_their_errors_name_them(tmp_path: Path) -> None:
    from app.settings import Settings
    from app.wiring import event_types

    event = json.loads(next(s.value for s in generate(50, seed=2) if s.event_type == "order"))
    many = {**event, "attributes": {f"x{i}": i for i in range(85)}}
    shipped_model = event_types(Settings(event_types="order")).models["order"]
    with pytest.raises(ValidationError) as caught:
        shipped_model.model_validate(many)
    assert caught.value.errors()[0]["msg"] == (
        "attributes has 85 keys; the limit is 50 (ARBITER_SCHEMAS_MAX_ATTRIBUTES): raise it, "
        "or declare the values as fields of the type (docs/events.md)"
    )
    raised = event_types(Settings(event_types="order", schemas_max_attributes=100))
    assert len(raised.models["order"].model_validate(many).attributes) == 85
    long_text = {**event, "attributes": {"note": "n" * 300}}
    with pytest.raises(ValidationError) as caught:
        shipped_model.model_validate(long_text)
    assert any("(ARBITER_SCHEMAS_MAX_ATTRIBUTE_CHARS)" in e["msg"] for e in caught.value.errors())


def test_a_key_longer_than_the_ledger_keeps_is_refused_at_decoding(tmp_path: Path) -> None:
    text = LOAN.replace("customer_id: {type: string, max_length: 32}", "customer_id: string")
    declarations, _ = load_declarations(declare(tmp_path, text))
    with pytest.raises(ValidationError) as caught:
        declarations["loan"].model.model_validate({**GOOD_LOAN, "customer_id": "c" * 129})
    assert caught.value.errors()[0]["msg"] == "String should have at most 128 characters"


# -- what a declared model will learn from: feature rows and targets

LOAN_FEATURES = LOAN.replace(
    "features: {exclude: [customer_id], derived: [{log: income}]}",
    "features: {derived: [{log: income}, {hour_of_day: submitted_at}, "
    "{vs_recent_mean: balance}, {length: note}]}",
)


def test_a_declared_type_gives_feature_rows_from_its_fields_and_asked_for_derivations(
    tmp_path: Path,
) -> None:
    from app.declarations import model_catalog
    from app.inference.features import History, model_rows

    declarations, problems = load_declarations(declare(tmp_path, LOAN_FEATURES))
    assert problems == []
    model = declarations["loan"].model
    risk = model_catalog([declarations["loan"].spec])["loan.default_risk"]
    first = model.model_validate({**GOOD_LOAN, "tags": ["a", "b"], "note": "call back"})
    second = model.model_validate({**GOOD_LOAN, "application_id": "app-2", "balance": 2401.0})
    rows = model_rows(risk, [first, second], History())
    assert rows[0] == {
        "balance": 1200.5,
        "income": 38000.0,
        "student": 0.0,
        "purpose": "car",
        "dependants": None,
        "address.country": "DE",
        "address.postcode": "10115",
        "count(tags)": 2.0,
        "log(income)": pytest.approx(10.5453, abs=1e-4),
        "hour_of_day(submitted_at)": 8.0,  # 09:30+01:00 is 08:30 UTC
        "vs_recent_mean(balance)": None,  # nothing earlier from this customer
        "length(note)": 9.0,
    }
    # The id, the key, the time and free text are never features; history is per key.
    assert rows[1]["vs_recent_mean(balance)"] == pytest.approx(2401.0 / 1200.5)
    assert rows[1]["length(note)"] is None


SHOP = """\
type: shop_order
key: customer_id
time: placed_at
fields:
  event_id: string
  customer_id: string
  placed_at: datetime
  country: {type: string, format: country}
  ship_to: {type: string, format: country}
  lines:
    type: array
    items:
      type: object
      fields:
        sku: string
        price: {type: number, min: 0}
  courier: {type: object, fields: {name: string, tracking: string}}
labels:
  returned: boolean
models:
  - name: returns
    predicts: {label: returned}
    features:
      include: [country, lines, courier.name]
      derived: [{differs: [country, ship_to]}, {max: lines.price}, {sum: lines.price},
                {is_night: placed_at}, {day_of_week: placed_at}]
"""


def test_a_model_reads_only_what_its_include_list_names_plus_its_derived_features(
    tmp_path: Path,
) -> None:
    from app.declarations import model_catalog
    from app.inference.features import History, candidate_columns, model_rows

    declarations, problems = load_declarations(declare(tmp_path, SHOP, "shop_order.yaml"))
    assert problems == []
    returns = model_catalog([declarations["shop_order"].spec])["shop_order.returns"]
    numeric, categorical = candidate_columns(returns)
    assert categorical == ["country", "courier.name"]  # not ship_to, not courier.tracking
    assert numeric == [
        "count(lines)",
        "differs(country,ship_to)",
        "max(lines.price)",
        "sum(lines.price)",
        "is_night(placed_at)",
        "day_of_week(placed_at)",
    ]
    event = declarations["shop_order"].model.model_validate(
        {
            "event_id": "o-1",
            "customer_id": "c-1",
            "placed_at": "2026-03-07T02:15:00Z",  # a Saturday night
            "country": "DE",
            "ship_to": "FR",
            "lines": [{"sku": "a", "price": 10.0}, {"sku": "b", "price": 2.5}],
            "courier": {"name": "DHL", "tracking": "x-1"},
        }
    )
    (row,) = model_rows(returns, [event], History())
    assert row == {
        "country": "DE",
        "courier.name": "DHL",
        "count(lines)": 2.0,
        "differs(country,ship_to)": 1.0,
        "max(lines.price)": 10.0,
        "sum(lines.price)": 12.5,
        "is_night(placed_at)": 1.0,
        "day_of_week(placed_at)": 5.0,
    }


@pytest.mark.parametrize(
    ("derived", "message"),
    [
        ("{max: country}", "max needs a number or integer field inside an array of objects"),
        ("{sum: lines}", "sum needs a number or integer field inside an array of objects"),
        ("{log: lines.price}", "log needs a number or integer field outside arrays"),
        ("{differs: country}", "differs compares two fields, e.g. {differs: [a, b]}"),
        ("{differs: [country, shipto]}", "differs needs a string or enum"),
    ],
)
def test_a_derived_feature_on_the_wrong_field_is_refused_with_the_fix(
    tmp_path: Path, derived: str, message: str
) -> None:
    text = SHOP.replace(
        "derived: [{differs: [country, ship_to]}, {max: lines.price}, {sum: lines.price},\n"
        "                {is_night: placed_at}, {day_of_week: placed_at}]",
        f"derived: [{derived}]",
    )
    _, problems = load_declarations(declare(tmp_path, text, "shop_order.yaml"))
    assert len(problems) == 1, problems
    assert message in str(problems[0])


def test_a_declared_model_learns_its_target_from_the_declared_label(shipped) -> None:
    from app.declarations import model_catalog
    from app.trainer.jobs.dataset import target

    catalog = model_catalog(d.spec for d in shipped.values())
    risk = catalog["order.risk"]
    assert target(risk, {"status": "Chargeback"}) is True
    assert target(risk, {"status": "fulfilled"}) is False
    assert target(risk, {"status": "lost"}) is None
    assert target(risk, {}) is None
    assert target(risk, {"problem": True}) is True  # its fallback label
    assert target(catalog["ticket.urgency"], {"urgency": " HIGH"}) == "high"
    assert target(catalog["transaction.fraud"], {"fraud": "true"}) is True


def test_a_model_can_keep_a_field_through_feature_selection_and_a_typo_is_refused(
    tmp_path: Path,
) -> None:
    kept = LOAN.replace(
        "features: {exclude: [customer_id], derived: [{log: income}]}",
        "features: {keep: [student], derived: [{log: income}]}",
    )
    declarations, problems = load_declarations(declare(tmp_path, kept))
    assert problems == []
    assert declarations["loan"].spec.models[0].keep == ("student",)
    typo = kept.replace("keep: [student]", "keep: [studnet]")
    _, problems = load_declarations(declare(tmp_path, typo))
    assert "model 'default_risk': keep names 'studnet', which is not a field of 'loan'" in str(
        problems[0]
    )


def test_a_yes_no_model_may_declare_what_a_wrong_call_costs(tmp_path: Path) -> None:
    priced = LOAN.replace(
        "    predicts: {label: defaulted}\n",
        "    predicts: {label: defaulted}\n    costs: {false_positive: 1, false_negative: 20}\n",
    )
    declarations, problems = load_declarations(declare(tmp_path, priced))
    assert problems == []
    assert declarations["loan"].spec.models[0].costs == (1.0, 20.0)
    bad = priced.replace("false_negative: 20", "false_negative: -3")
    _, problems = load_declarations(declare(tmp_path, bad))
    assert "costs are two positive numbers for a yes/no model" in str(problems[0])
