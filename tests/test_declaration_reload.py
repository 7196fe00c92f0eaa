"""Declarations change without a restart (app.declarations.reload): what a running service
takes live, what it refuses and why, and the swap under the real service — a compatible
change is served over Kafka and HTTP, an incompatible one is refused while the
declarations in service keep deciding."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
import structlog
from prometheus_client import REGISTRY

from app.declarations import EventTypes, served_types
from app.declarations.reload import DeclarationsWatcher, incompatible
from app.errors import ConfigError
from app.rules.loader import load_rulesets
from app.rules.reload import RulesWatcher, fields_read, rules_check, vocabulary
from app.settings import Settings
from app.wiring import consume_loop, start_components
from connectors.broker import EmbeddedBroker
from tests.harness import admin_client, produce, service_settings, wait_decided
from tests.test_own_event_types import LOAN as SERVED_LOAN
from tests.test_own_event_types import RULES as SERVED_RULES
from tests.test_own_event_types import as_sim, loan

LOAN = """\
type: loan
description: A credit application.
id: application_id
key: customer_id
time: submitted_at
fields:
  application_id: string
  customer_id: string
  submitted_at: datetime
  balance: {type: number, min: 0, max: 100000}
  income: {type: number, min: 0}
  student: boolean
  purpose: {type: enum, values: [car, home, education]}
  note: {type: string, text: true, max_length: 500, required: false}
  address:
    type: object
    fields:
      country: {type: string, format: country}
labels:
  defaulted: boolean
  grade: {type: enum, values: [a, b, c]}
models:
  - name: default_risk
    predicts: {label: defaulted}
    features: {exclude: [student], derived: [{log: income}]}
  - name: grade
    predicts: {label: grade, positive: [a]}
    features: {include: [purpose]}
  - name: note_risk
    predicts: {label: defaulted}
    kind: text
"""

RULES = """\
ruleset: loan
default: {decision: approve, reason: Nothing against it.}
rules:
  - name: decline_high_balance
    when: {field: balance, gt: 50000}
    decision: decline
    reason: "Balance {balance} is above 50000."
  - name: decline_model_risk
    when: {field: scores.default_risk, gte: 0.9}
    decision: decline
    reason: Risky.
"""


def _folder(root: Path, name: str, text: str) -> Path:
    folder = root / name
    folder.mkdir(exist_ok=True)
    (folder / "loan.yaml").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def old(tmp_path: Path) -> EventTypes:
    return served_types(_folder(tmp_path, "old", LOAN), ("loan",))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return _folder(tmp_path, "rules", RULES)


def _new(tmp_path: Path, text: str) -> EventTypes:
    return served_types(_folder(tmp_path, "new", text), ("loan",))


def _why(old: EventTypes, new: EventTypes, rules_dir: Path) -> list[str]:
    """``incompatible`` as the service calls it: with the rules in service."""
    rulesets = load_rulesets(rules_dir, *vocabulary(old))
    return incompatible(
        old, new, rule_fields=fields_read(rulesets), rules_check=rules_check(rules_dir)
    )


def _edit(old: str, new: str, text: str = LOAN) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# -- taken live


def test_a_new_optional_field_is_taken_live(old, rules_dir, tmp_path) -> None:
    text = _edit(
        "  student: boolean\n", "  student: boolean\n  channel: {type: string, required: false}\n"
    )
    assert _why(old, _new(tmp_path, text), rules_dir) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("max: 100000}", "max: 500000}"),  # a loosened bound
        ("values: [car, home, education]", "values: [car, home, education, boat]"),  # enum
        ("description: A credit application.", "description: A loan application."),
        ("  grade: {type: enum", "  purposeful: boolean\n  grade: {type: enum"),  # a label
        (
            "models:\n",
            "models:\n  - name: income_model\n    predicts: {label: defaulted}\n",
        ),  # a new model: not trained until it is
        ("  income: {type: number, min: 0}", "  income: {type: integer, min: 0}"),  # same kind
    ],
    ids=[
        "loosened_bound",
        "new_enum_value",
        "description",
        "new_label",
        "new_model",
        "integer_for_number",
    ],
)
def test_changes_no_rule_model_or_stored_state_relies_on_are_taken_live(
    old, rules_dir, tmp_path, before: str, after: str
) -> None:
    assert _why(old, _new(tmp_path, _edit(before, after)), rules_dir) == []


def test_removing_a_field_no_rule_or_model_reads_is_taken_live(old, rules_dir, tmp_path) -> None:
    text = _edit("  student: boolean\n", "")
    text = _edit("features: {exclude: [student], derived", "features: {derived", text)
    assert _why(old, _new(tmp_path, text), rules_dir) == []


# -- refused, each with the type, the field and the fix


def test_removing_a_field_a_rule_reads_is_refused_naming_the_rule(old, rules_dir, tmp_path) -> None:
    text = _edit("  balance: {type: number, min: 0, max: 100000}\n", "")
    reasons = _why(old, _new(tmp_path, text), rules_dir)
    [reason] = [r for r in reasons if "rule" in r]
    assert reason.startswith("loan: field 'balance' is removed, but rule 'decline_high_balance' (")
    assert "loan.yaml:4)" in reason
    assert "keep it in loan.yaml as it was, or change the rule first" in reason


def test_changing_the_kind_of_a_field_a_rule_reads_is_refused(old, rules_dir, tmp_path) -> None:
    text = _edit("balance: {type: number, min: 0, max: 100000}", "balance: string")
    reasons = _why(old, _new(tmp_path, text), rules_dir)
    [reason] = [r for r in reasons if "rule" in r]
    assert "loan: field 'balance' is changed from number to string" in reason
    assert "rule 'decline_high_balance'" in reason


def test_removing_a_field_a_model_includes_is_refused_by_the_declaration_check(
    old, tmp_path
) -> None:
    text = _edit("  purpose: {type: enum, values: [car, home, education]}\n", "")
    watcher = DeclarationsWatcher(_folder(tmp_path, "new", text), old)
    change = watcher.check()
    assert change.types is None
    assert any(
        "model 'grade': include names 'purpose', which is not a field" in p for p in change.problems
    ), change.problems


def test_removing_a_field_a_model_uses_as_a_feature_is_refused(old, rules_dir, tmp_path) -> None:
    text = _edit(
        "  address:\n    type: object\n    fields:\n"
        "      country: {type: string, format: country}\n",
        "",
    )
    reasons = _why(old, _new(tmp_path, text), rules_dir)
    assert reasons == [
        "loan: field 'address' is removed, but model 'default_risk' uses it as a feature — "
        "keep it as it was (or declare a new model without it)"
    ]


def test_changing_a_nested_feature_field_is_refused(old, rules_dir, tmp_path) -> None:
    text = _edit("country: {type: string, format: country}", "country: integer")
    [reason] = _why(old, _new(tmp_path, text), rules_dir)
    assert "field 'address.country' is changed from string to number" in reason
    assert "model 'default_risk'" in reason


def test_removing_the_field_of_a_derived_feature_is_refused_by_the_declaration_check(
    old, tmp_path
) -> None:
    text = _edit("  income: {type: number, min: 0}\n", "")
    change = DeclarationsWatcher(_folder(tmp_path, "new", text), old).check()
    assert change.types is None
    assert any("model 'default_risk': log needs" in p for p in change.problems), change.problems


def test_a_text_field_a_text_model_reads_is_kept_as_text(old, rules_dir, tmp_path) -> None:
    no_longer = _edit("note: {type: string, text: true, max_length: 500", "note: {type: string")
    no_longer = _edit("    kind: text\n", "    features: {include: [purpose]}\n", no_longer)
    reasons = _why(old, _new(tmp_path, no_longer), rules_dir)
    assert any(
        "field 'note' is no longer 'text: true', but model 'note_risk' reads it" in r
        for r in reasons
    ), reasons


def test_removing_a_label_a_model_predicts_is_refused(old, rules_dir, tmp_path) -> None:
    folder = _folder(tmp_path, "new", _edit("  grade: {type: enum, values: [a, b, c]}\n", ""))
    watcher = DeclarationsWatcher(folder, old)
    change = watcher.check()
    assert change.types is None
    assert any("grade" in p and "label" in p for p in change.problems), change.problems


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            "grade: {type: enum, values: [a, b, c]}",
            "grade: {type: enum, values: [a, b]}",
            "loan: label 'grade' changed (enum of a, b, c → enum of a, b), but model 'grade' "
            "predicts it",
        ),
    ],
    ids=["label_value_removed"],
)
def test_changing_a_label_a_model_predicts_is_refused(
    old, rules_dir, tmp_path, before: str, after: str, expected: str
) -> None:
    reasons = _why(old, _new(tmp_path, _edit(before, after)), rules_dir)
    assert any(r.startswith(expected) for r in reasons), reasons


def test_a_label_turned_into_classes_under_a_yes_no_model_is_refused_by_the_loader(
    tmp_path,
) -> None:
    text = _edit("  defaulted: boolean\n", "  defaulted: {type: enum, values: ['yes', 'no']}\n")
    with pytest.raises(ConfigError, match="model 'default_risk': a tabular model predicts yes"):
        _new(tmp_path, text)


def test_a_model_removed_with_its_label_and_features_is_taken_live(
    old, rules_dir, tmp_path
) -> None:
    text = _edit("  grade: {type: enum, values: [a, b, c]}\n", "")
    text = _edit(
        "  - name: grade\n    predicts: {label: grade, positive: [a]}\n"
        "    features: {include: [purpose]}\n",
        "",
        text,
    )
    assert _why(old, _new(tmp_path, text), rules_dir) == []


def test_a_new_class_for_a_multi_class_model_is_refused(rules_dir, tmp_path) -> None:
    multi = _edit(
        "  - name: grade\n    predicts: {label: grade, positive: [a]}\n"
        "    features: {include: [purpose]}\n",
        "  - name: grade\n    predicts: {label: grade}\n    kind: text\n",
    )
    before = served_types(_folder(tmp_path, "multi", multi), ("loan",))
    text = _edit(
        "grade: {type: enum, values: [a, b, c]}", "grade: {type: enum, values: [a, b, c, d]}", multi
    )
    [reason] = _why(before, _new(tmp_path, text), rules_dir)
    assert reason.startswith(
        "loan: model 'grade' changed what it predicts or how (classes a, b, c → a, b, c, d)"
    )
    assert "declare the new one under a new model name" in reason


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            "id: application_id\n",
            "id: application_ref\n",
            "loan: the id field changed from application_id to application_ref, and stored "
            "decisions are keyed by it — keep 'id: application_id'",
        ),
        (
            "key: customer_id\n",
            "key: branch\n",
            "loan: the key field changed from customer_id to branch, and partitions and "
            "windows are keyed by it — keep 'key: customer_id'",
        ),
        (
            "time: submitted_at\n",
            "time: arrival\n",
            "loan: the time field changed from submitted_at to arrival, and windows count by "
            "it — keep 'time: submitted_at'",
        ),
    ],
    ids=["id", "key", "time"],
)
def test_changing_the_id_key_or_time_field_is_refused(
    old, rules_dir, tmp_path, before: str, after: str, expected: str
) -> None:
    text = _edit(before, after)
    if "application_ref" in after:
        text = _edit("  application_id: string\n", "  application_ref: string\n", text)
    if "branch" in after:
        text = _edit("  student: boolean\n", "  student: boolean\n  branch: string\n", text)
    reasons = _why(old, _new(tmp_path, text), rules_dir)
    assert any(r.startswith(expected) for r in reasons), reasons


def test_a_served_types_declaration_deleted_is_refused(old, rules_dir, tmp_path) -> None:
    gone = EventTypes(
        served_types(_folder(tmp_path, "other", LOAN), ("loan",)).declarations, ("loan",), {}
    )
    gone.declarations.types.clear()
    [reason] = _why(old, gone, rules_dir)
    assert reason.startswith("loan: its declaration loan.yaml is gone, but loan is served")
    assert "ARBITER_EVENT_TYPES" in reason


def test_removing_a_model_whose_score_a_rule_reads_fails_the_rules_check(
    old, rules_dir, tmp_path
) -> None:
    text = _edit(
        "  - name: default_risk\n    predicts: {label: defaulted}\n"
        "    features: {exclude: [student], derived: [{log: income}]}\n",
        "",
    )
    reasons = _why(old, _new(tmp_path, text), rules_dir)
    assert len(reasons) == 1, reasons
    assert "scores.default_risk" in reasons[0]
    assert reasons[0].endswith(
        "the new declarations break this rule: keep what it reads in the declaration, or "
        "change the rule first"
    )


# -- the watcher


def test_the_watcher_reports_a_change_once_and_only_when_the_folder_changed(
    old, rules_dir, tmp_path
) -> None:
    folder = tmp_path / "old"
    watcher = DeclarationsWatcher(folder, old, interval_s=0.001, rules_check=rules_check(rules_dir))
    assert watcher.poll(force=True) is None  # nothing changed
    (folder / "loan.yaml").write_text(
        _edit(
            "  student: boolean\n",
            "  student: boolean\n  channel: {type: string, required: false}\n",
        )
    )
    change = watcher.poll(force=True)
    assert change is not None
    assert change.types is not None
    assert change.problems == ()
    assert watcher.current is change.types
    assert "channel" in change.types.field_kinds()["loan"]
    assert watcher.poll(force=True) is None  # taken: not reported again


def test_a_broken_declaration_is_refused_with_the_loaders_problems_and_reported_once(
    old, tmp_path
) -> None:
    folder = tmp_path / "old"
    watcher = DeclarationsWatcher(folder, old, interval_s=0.001)
    (folder / "loan.yaml").write_text(_edit("  student: boolean\n", "  student: bolean\n"))
    change = watcher.poll(force=True)
    assert change is not None
    assert change.types is None
    assert any("bolean" in p and "did you mean 'boolean'" in p for p in change.problems), change
    assert watcher.current is old
    assert watcher.poll(force=True) is None
    watcher.retry_refused()  # e.g. the rules changed: the same folder is checked again
    again = watcher.poll(force=True)
    assert again is not None
    assert again.types is None


def test_a_new_type_file_is_not_served_and_named_for_a_restart(old, tmp_path) -> None:
    folder = tmp_path / "old"
    watcher = DeclarationsWatcher(folder, old, interval_s=0.001)
    card = "type: card\nid: card_id\nkey: holder\nfields:\n  card_id: string\n  holder: string\n"
    (folder / "card.yaml").write_text(card)
    change = watcher.poll(force=True)
    assert change is not None
    assert change.unserved == ("card",)
    assert change.types is not None
    assert change.types.names == ("loan",)
    assert set(change.types.models) == {"loan"}


def test_a_watcher_with_no_interval_never_looks(old, tmp_path) -> None:
    watcher = DeclarationsWatcher(tmp_path / "old", old, interval_s=0)
    (tmp_path / "old" / "loan.yaml").write_text("type: [")
    assert watcher.poll() is None


# -- under the real service


WITH_CHANNEL = _edit(
    "  student: boolean\n",
    "  student: boolean\n  channel: {type: enum, values: [web, branch], required: false}\n",
    SERVED_LOAN,
)


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _reloads(result: str) -> float:
    value = REGISTRY.get_sample_value("arbiter_declarations_reloads_total", {"result": result})
    return value or 0.0


async def _until(check, what: str, timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.kafka
@pytest.mark.sqlite
@pytest.mark.timeout(240)
async def test_a_running_service_takes_a_compatible_change_and_refuses_a_breaking_one(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    schemas, rules = tmp_path / "schemas", tmp_path / "rules"
    schemas.mkdir()
    rules.mkdir()
    declaration = schemas / "loan.yaml"
    declaration.write_text(SERVED_LOAN, encoding="utf-8")
    (rules / "loan.yaml").write_text(textwrap.dedent(SERVED_RULES), encoding="utf-8")
    settings = service_settings(
        broker,
        trained_models,
        tmp_path,
        schemas_dir=schemas,
        rules_dir=rules,
        schemas_reload_s=0.1,
    )
    applied, refused = _reloads("applied"), _reloads("refused")
    with structlog.testing.capture_logs() as logs:
        await _serve_and_change(settings, broker, declaration)
    assert _reloads("applied") == applied + 1
    assert _reloads("refused") == refused + 1
    [reloaded] = [e for e in logs if e["event"] == "declarations reloaded"]
    assert reloaded["types"] == ["loan"]
    [refusal] = [e for e in logs if e["event"].startswith("declarations refused")]
    assert refusal["log_level"] == "error"
    assert any(
        p.startswith("loan: field 'balance' is removed, but rule 'decline_high_balance'")
        for p in refusal["problems"]
    ), refusal["problems"]


async def _serve_and_change(settings: Settings, broker: EmbeddedBroker, declaration: Path) -> None:
    applied, refused = _reloads("applied"), _reloads("refused")
    async with start_components(settings) as c:
        loop = consume_loop(c)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        async with admin_client(c, settings) as client:
            early = await client.post("/v1/decide/loan", json=loan(1, "c-1", channel="web"))
            assert early.status_code == 422, early.text  # not declared yet
            assert "channel" in early.json()["detail"]

            # A compatible change: a new optional field.
            _write(declaration, WITH_CHANNEL)
            await _until(lambda: _reloads("applied") > applied, "the declarations reload")
            assert c.types.spec("loan").field("channel") is not None
            await produce(broker.bootstrap, [as_sim(loan(2, "c-2", channel="web"))])
            [kafka] = await wait_decided(c.ledger, ["app-2"])
            assert kafka.record.decision == "approve"
            assert kafka.record.payload["channel"] == "web"
            decided = await client.post("/v1/decide/loan", json=loan(3, "c-3", channel="branch"))
            assert decided.status_code == 200, decided.text
            assert decided.json()["decision"] == "approve"
            posted = await client.post("/v1/events/loan", json=[loan(4, "c-4", channel="web")])
            assert posted.status_code == 202, posted.text
            await wait_decided(c.ledger, ["app-4"])

            # A breaking change: the field rule decline_high_balance reads is removed.
            serving = c.types
            _write(declaration, _edit("  balance: {type: number, min: 0}\n", "", WITH_CHANNEL))
            await _until(lambda: _reloads("refused") > refused, "the refusal")
            assert c.types is serving
            await produce(broker.bootstrap, [as_sim(loan(5, "c-5", balance=90000.0))])
            [still] = await wait_decided(c.ledger, ["app-5"])
            assert still.record.decision == "decline"
            assert still.record.reasons[0] == "Balance 90000.00 is above 50000."
            over_http = await client.post(
                "/v1/decide/loan", json=loan(6, "c-6", balance=70000.0, channel="web")
            )
            assert over_http.status_code == 200, over_http.text
            assert over_http.json()["decision"] == "decline"
        loop.stop()
        await task


def test_a_rule_change_refused_for_a_field_not_yet_declared_is_taken_with_the_declaration(
    old, tmp_path
) -> None:
    """The rules watcher follows the declarations: a rule file refused because it reads a
    field that is not declared yet is checked again once the declaration that adds it is
    taken."""
    rules = _folder(tmp_path, "rules", RULES)
    watcher = RulesWatcher(rules, *vocabulary(old), interval_s=0.001)
    reads_channel = RULES + (
        "  - name: review_branch\n"
        "    when: {field: channel, eq: branch}\n"
        "    decision: review\n"
        "    reason: In a branch.\n"
    )
    (rules / "loan.yaml").write_text(reads_channel, encoding="utf-8")
    refused = watcher.poll(force=True)
    assert refused is not None
    assert refused.rulesets is None
    assert any("channel" in str(p) for p in refused.problems)
    with_channel = _new(
        tmp_path,
        _edit(
            "  student: boolean\n",
            "  student: boolean\n  channel: {type: string, required: false}\n",
        ),
    )
    watcher.set_vocabulary(*vocabulary(with_channel))
    taken = watcher.poll(force=True)
    assert taken is not None
    assert taken.rulesets is not None
    assert [r.name for r in taken.rulesets["loan"].rules][-1] == "review_branch"
